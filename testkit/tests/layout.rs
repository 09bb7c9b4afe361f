//! The workspace's crates keep their layout rules (see `chorus_testkit::layout`).

use std::path::Path;

fn src(krate: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(krate)
        .join("src")
}

#[test]
fn the_server_s_modules_import_in_one_direction() {
    chorus_testkit::layout::assert_layout(&src("server"));
}

#[test]
fn the_storage_s_modules_import_in_one_direction() {
    chorus_testkit::layout::assert_layout(&src("storage"));
}

#[test]
fn the_sdk_s_modules_import_in_one_direction() {
    chorus_testkit::layout::assert_layout(&src("client-sdk"));
}

#[test]
fn the_protocol_s_modules_import_in_one_direction() {
    chorus_testkit::layout::assert_layout(&src("protocol"));
}

#[test]
fn the_load_tester_s_modules_import_in_one_direction() {
    chorus_testkit::layout::assert_layout(&src("loadtest"));
}

#[test]
fn the_search_index_s_modules_import_in_one_direction() {
    chorus_testkit::layout::assert_layout(&src("search"));
}

#[test]
fn the_cluster_layer_s_modules_import_in_one_direction() {
    chorus_testkit::layout::assert_layout(&src("cluster"));
}
