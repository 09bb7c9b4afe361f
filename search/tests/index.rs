//! The index over a real store: what it finds, for whom, after edits, deletes, erasure,
//! truncation, restarts and rebuilds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus_protocol::ids::{ChannelId, Seq, UserId};
use chorus_protocol::search::parse;
use chorus_protocol::v1::{self, ChannelKind, Message, channel_event::Body};
use chorus_search::{
    Analyzer, FeedConfig, Hit, Order, Scope, SearchConfig, SearchIndex, SearchRequest,
};
use chorus_storage::{
    CommitListener, LogEntry, NewChannel, NewEntry, RetentionPolicy, Store, StoreConfig,
};

fn cid(s: &str) -> ChannelId {
    ChannelId::new(s).unwrap()
}

fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

/// Tells the index of every durable entry, as the node's commit listener does.
struct Feed(Arc<OnceLock<Arc<SearchIndex>>>);

impl CommitListener for Feed {
    fn on_commit(&self, entry: &Arc<LogEntry>) {
        if let Some(index) = self.0.get() {
            index.notify(&entry.event.channel_id);
        }
    }
}

struct World {
    store: Store,
    index: Arc<SearchIndex>,
    dir: tempfile::TempDir,
}

fn search_config(dir: &std::path::Path, analyzer: Analyzer) -> SearchConfig {
    SearchConfig {
        dir: dir.join("search"),
        analyzer,
        feed: FeedConfig {
            commit_interval: Duration::from_millis(50),
            commit_docs: 10_000,
            writer_memory_bytes: 15_000_000,
        },
    }
}

fn open_store(dir: &std::path::Path) -> Store {
    let mut config = StoreConfig::new(dir.join("store"));
    config.engine_cache_bytes = 8 * 1024 * 1024;
    Store::open(config).unwrap()
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let index = Self::attach(&store, dir.path(), Analyzer::Simple);
        World { store, index, dir }
    }

    fn attach(store: &Store, dir: &std::path::Path, analyzer: Analyzer) -> Arc<SearchIndex> {
        let slot = Arc::new(OnceLock::new());
        store.set_commit_listener(Arc::new(Feed(slot.clone())));
        let index =
            Arc::new(SearchIndex::open(search_config(dir, analyzer), store.clone()).unwrap());
        let _ = slot.set(index.clone());
        index
    }

    /// Closes both and opens them again on the same files.
    fn restart(self, analyzer: Analyzer) -> World {
        let World { store, index, dir } = self;
        index.close();
        drop(index);
        store.close();
        drop(store);
        let store = open_store(dir.path());
        let index = Self::attach(&store, dir.path(), analyzer);
        World { store, index, dir }
    }

    async fn channel(&self, id: &str, kind: ChannelKind, members: &[&str]) -> ChannelId {
        let c = cid(id);
        self.store
            .create_channel(NewChannel {
                id: c.clone(),
                kind,
                name: id.into(),
                topic: String::new(),
                created_by: uid(members[0]),
                created_at_ms: 1,
                members: members[1..]
                    .iter()
                    .map(|m| (uid(m), v1::Role::Member))
                    .collect(),
                custom: Bytes::new(),
                retention: RetentionPolicy::default(),
            })
            .await
            .unwrap();
        c
    }

    async fn post(&self, c: &ChannelId, author: &str, at: u64, m: Message) -> Seq {
        self.append(c, author, at, Body::Message(m), false).await
    }

    async fn say(&self, c: &ChannelId, author: &str, at: u64, text: &str) -> Seq {
        self.post(c, author, at, text_message(text)).await
    }

    async fn append(
        &self,
        c: &ChannelId,
        author: &str,
        at: u64,
        body: Body,
        withheld: bool,
    ) -> Seq {
        self.store
            .append(
                c,
                NewEntry {
                    author: Some(uid(author)),
                    time_ms: at,
                    body,
                    client_msg_id: None,
                    withheld,
                },
            )
            .await
            .unwrap()
            .entry
            .seq
    }

    async fn find(&self, reader: &str, channels: &[&ChannelId], q: &str) -> Vec<(String, u64)> {
        self.find_with(reader, channels, false, Order::Newest, q)
            .await
    }

    async fn find_with(
        &self,
        reader: &str,
        channels: &[&ChannelId],
        public: bool,
        order: Order,
        q: &str,
    ) -> Vec<(String, u64)> {
        self.index.sync().await.unwrap();
        let scope = Scope {
            reader: uid(reader),
            channel: None,
            channels: channels.iter().map(|c| (*c).clone()).collect(),
            include_public: public,
        };
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let query = parse(q).unwrap();
            let page = self
                .index
                .search(&SearchRequest {
                    query: &query,
                    scope: &scope,
                    order,
                    cursor: cursor.as_deref(),
                    limit: 2,
                    deadline: Instant::now() + Duration::from_secs(5),
                    snippet_chars: 100,
                })
                .unwrap();
            assert!(!page.timed_out);
            out.extend(
                page.hits
                    .iter()
                    .map(|h: &Hit| (h.channel.to_string(), h.seq.get())),
            );
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        out
    }
}

fn text_message(text: &str) -> Message {
    Message {
        text: text.into(),
        ..Message::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_operator_finds_what_it_says() {
    let w = World::new();
    let dev = w
        .channel("dev", ChannelKind::Group, &["alice", "bob"])
        .await;
    let day = 1_796_601_600_000; // 2026-12-07
    let s1 = w
        .say(&dev, "alice", day - 1, "Deploying the release tonight")
        .await;
    let s2 = w
        .post(
            &dev,
            "bob",
            day + 10,
            Message {
                text: "see https://example.com/notes about the release".into(),
                mentions: vec!["alice".into()],
                ..Message::default()
            },
        )
        .await;
    let s3 = w
        .post(
            &dev,
            "bob",
            day + 20,
            Message {
                text: "the deploy report".into(),
                attachments: vec![v1::Attachment {
                    name: "report.pdf".into(),
                    ..Default::default()
                }],
                thread_parent_seq: s1.get(),
                ..Message::default()
            },
        )
        .await;
    let s4 = w
        .say(
            &dev,
            "alice",
            day + 86_400_000 + 5,
            "release notes are done",
        )
        .await;
    let all = |v: &[Seq]| {
        v.iter()
            .map(|s| ("dev".to_owned(), s.get()))
            .collect::<Vec<_>>()
    };
    let f = |q: &'static str| {
        let w = &w;
        let dev = &dev;
        async move { w.find("alice", &[dev], q).await }
    };
    // Newest first.
    assert_eq!(f("release").await, all(&[s4, s2, s1]));
    assert_eq!(f("\"release notes\"").await, all(&[s4]));
    assert_eq!(f("deplo*").await, all(&[s3, s1]));
    // s2 links to ".../notes".
    assert_eq!(f("release -notes").await, all(&[s1]));
    assert_eq!(f("release -tonight").await, all(&[s4, s2]));
    assert_eq!(f("from:bob").await, all(&[s3, s2]));
    assert_eq!(f("release from:alice").await, all(&[s4, s1]));
    assert_eq!(f("in:dev report").await, all(&[s3]));
    assert_eq!(f("has:attachment").await, all(&[s3]));
    assert_eq!(f("report.pdf").await, all(&[s3]));
    assert_eq!(f("has:link").await, all(&[s2]));
    assert_eq!(f("mentions:me").await, all(&[s2]));
    assert_eq!(w.find("bob", &[&dev], "mentions:me").await, all(&[]));
    assert_eq!(f("has:mention").await, all(&[s2]));
    assert_eq!(f("is:reply").await, all(&[s3]));
    let thread = w
        .find("alice", &[&dev], &format!("in:dev thread:{s1}"))
        .await;
    assert_eq!(thread, all(&[s3, s1]));
    assert_eq!(f("release before:2026-12-07").await, all(&[s1]));
    assert_eq!(f("release on:2026-12-07").await, all(&[s2]));
    assert_eq!(f("release after:2026-12-07").await, all(&[s4]));
    assert_eq!(f("DÉPLOYING").await, all(&[s1]));
    // Relevance: the message saying "release" twice in few words ranks first.
    let s5 = w.say(&dev, "bob", day + 30, "release release").await;
    let ranked = w
        .find_with("alice", &[&dev], false, Order::Relevance, "release")
        .await;
    assert_eq!(ranked.first(), Some(&("dev".to_owned(), s5.get())));
    assert_eq!(ranked.len(), 4);
    // thread: needs a channel.
    let scope = Scope {
        reader: uid("alice"),
        channel: None,
        channels: vec![dev.clone()],
        include_public: false,
    };
    let q = parse("thread:1").unwrap();
    let e = w.index.search(&SearchRequest {
        query: &q,
        scope: &scope,
        order: Order::Newest,
        cursor: None,
        limit: 5,
        deadline: Instant::now() + Duration::from_secs(1),
        snippet_chars: 50,
    });
    assert!(matches!(
        e,
        Err(chorus_search::SearchError::ThreadNeedsChannel)
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn scope_withheld_edits_deletes_and_erasure() {
    let w = World::new();
    let private = w
        .channel("private", ChannelKind::Group, &["alice", "bob"])
        .await;
    let public = w.channel("town", ChannelKind::Public, &["carol"]).await;
    let p1 = w.say(&private, "alice", 10, "secret plan").await;
    let t1 = w.say(&public, "carol", 11, "public plan").await;
    // Only the channels in scope, and public ones when asked.
    assert_eq!(w.find("dave", &[], "plan").await, vec![]);
    assert_eq!(
        w.find_with("dave", &[], true, Order::Newest, "plan").await,
        vec![("town".into(), t1.get())]
    );
    assert_eq!(
        w.find("bob", &[&private], "plan").await,
        vec![("private".into(), p1.get())]
    );
    // Several `in:` are any of them.
    assert_eq!(
        w.find("alice", &[&private, &public], "plan in:private in:town")
            .await
            .len(),
        2
    );
    // Withheld posts: their author finds them, nobody else does.
    let hidden = w
        .append(
            &private,
            "bob",
            12,
            Body::Message(text_message("shadow plan")),
            true,
        )
        .await;
    assert_eq!(w.find("alice", &[&private], "shadow").await, vec![]);
    assert_eq!(
        w.find("bob", &[&private], "shadow").await,
        vec![("private".into(), hidden.get())]
    );
    // An edit replaces the content.
    w.append(
        &private,
        "alice",
        13,
        Body::MessageEdited(v1::MessageEdited {
            target_seq: p1.get(),
            text: "revised scheme".into(),
            ..Default::default()
        }),
        false,
    )
    .await;
    assert_eq!(w.find("bob", &[&private], "secret").await, vec![]);
    assert_eq!(
        w.find("bob", &[&private], "scheme").await,
        vec![("private".into(), p1.get())]
    );
    // A delete removes it.
    w.append(
        &private,
        "alice",
        14,
        Body::MessageDeleted(v1::MessageDeleted {
            target_seq: p1.get(),
            by_moderator: false,
        }),
        false,
    )
    .await;
    w.store
        .rewrite(&private, p1, Body::Tombstone(v1::Tombstone::default()))
        .await
        .unwrap();
    assert_eq!(w.find("bob", &[&private], "scheme").await, vec![]);
    // Erasure: nothing the user wrote is found.
    w.index.forget_author(&uid("carol")).await.unwrap();
    assert_eq!(
        w.find_with("carol", &[], true, Order::Newest, "plan").await,
        vec![]
    );
    // A cut history takes its documents along.
    let s = w.say(&private, "alice", 15, "fresh start").await;
    assert_eq!(
        w.find("alice", &[&private], "fresh").await,
        vec![("private".into(), s.get())]
    );
    w.store.truncate(&private, 16).await.unwrap();
    w.index.rescan();
    assert_eq!(w.find("alice", &[&private], "fresh").await, vec![]);
}

#[tokio::test(flavor = "multi_thread")]
async fn entries_the_index_never_heard_of_are_caught_up_once() {
    let w = World::new();
    let c = w.channel("c", ChannelKind::Group, &["alice"]).await;
    for i in 0..300u64 {
        w.say(&c, "alice", 100 + i, &format!("note {i} common"))
            .await;
    }
    w.index.sync().await.unwrap();
    // The index stops; the log goes on without it (as when the indexer is behind at a crash).
    w.index.close();
    for i in 300..600u64 {
        w.say(&c, "alice", 100 + i, &format!("note {i} common"))
            .await;
    }
    let w = w.restart(Analyzer::Simple);
    let hits = w.find("alice", &[&c], "common").await;
    assert_eq!(hits.len(), 600);
    let mut seqs: Vec<u64> = hits.iter().map(|h| h.1).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 600, "no document twice");
    assert_eq!(w.index.status().docs, 600);
    // A clean restart keeps it all too, and notifications go on.
    let w = w.restart(Analyzer::Simple);
    w.say(&c, "alice", 1_000, "one more common").await;
    assert_eq!(w.find("alice", &[&c], "common").await.len(), 601);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rebuild_equals_the_incremental_index_and_an_analyzer_change_rebuilds() {
    let w = World::new();
    let a = w.channel("a", ChannelKind::Group, &["alice"]).await;
    let b = w.channel("b", ChannelKind::Public, &["bob"]).await;
    for i in 0..50u64 {
        w.say(&a, "alice", i, &format!("deploying build {i}")).await;
        let s = w.say(&b, "bob", i, &format!("deployed service {i}")).await;
        if i % 5 == 0 {
            w.append(
                &b,
                "bob",
                i,
                Body::MessageEdited(v1::MessageEdited {
                    target_seq: s.get(),
                    text: format!("rolled back {i}"),
                    ..Default::default()
                }),
                false,
            )
            .await;
        }
    }
    let queries = [
        "deploying",
        "deployed",
        "rolled",
        "build -deploying",
        "from:bob",
    ];
    let mut before = Vec::new();
    for q in queries {
        before.push(w.find_with("alice", &[&a], true, Order::Newest, q).await);
    }
    let first = w.index.status().generation;
    let number = w.index.reindex().await.unwrap();
    assert_eq!(number, first + 1);
    assert!(matches!(
        w.index.reindex().await,
        Err(chorus_search::SearchError::ReindexRunning) | Ok(_)
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    while w.index.status().generation != number {
        assert!(Instant::now() < deadline, "rebuild did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (q, want) in queries.iter().zip(&before) {
        assert_eq!(
            &w.find_with("alice", &[&a], true, Order::Newest, q).await,
            want,
            "{q}"
        );
    }
    // Stemming for English: a restart with the new analyzer rebuilds in the background.
    let w = w.restart(Analyzer::parse("english").unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    while w.index.status().analyzer != "english" {
        assert!(Instant::now() < deadline, "analyzer rebuild did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // "deploying" now finds "deployed" too.
    assert_eq!(
        w.find_with("alice", &[&a], true, Order::Newest, "deploying")
            .await
            .len(),
        90
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn snippets_mark_the_matching_words_and_budgets_cut() {
    let w = World::new();
    let c = w.channel("c", ChannelKind::Group, &["alice"]).await;
    let text = "a long preamble that goes on and on before the important deadline is mentioned";
    w.say(&c, "alice", 1, text).await;
    w.index.sync().await.unwrap();
    let scope = Scope {
        reader: uid("alice"),
        channel: Some(c.clone()),
        channels: vec![],
        include_public: false,
    };
    let q = parse("deadline").unwrap();
    let page = w
        .index
        .search(&SearchRequest {
            query: &q,
            scope: &scope,
            order: Order::Relevance,
            cursor: None,
            limit: 5,
            deadline: Instant::now() + Duration::from_secs(5),
            snippet_chars: 40,
        })
        .unwrap();
    assert_eq!(page.hits.len(), 1);
    let s = page.snippet(text);
    assert!(s.fragment.len() <= 40 + 16, "{}", s.fragment);
    assert_eq!(s.highlighted.len(), 1);
    assert_eq!(&s.fragment[s.highlighted[0].clone()], "deadline");
    // A deadline already past cuts the query, and says so.
    for i in 0..3000u64 {
        w.say(&c, "alice", 2 + i, "filler deadline").await;
    }
    w.index.sync().await.unwrap();
    let page = w
        .index
        .search(&SearchRequest {
            query: &q,
            scope: &scope,
            order: Order::Newest,
            cursor: None,
            limit: 5,
            deadline: Instant::now(),
            snippet_chars: 40,
        })
        .unwrap();
    assert!(page.timed_out);
    let status = w.index.status();
    assert_eq!(status.docs, 3001);
    assert_eq!(status.lag_entries, 0);
    assert!(status.disk_bytes > 0);
}
