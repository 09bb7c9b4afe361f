//! A realistic mix: users in public rooms whose popularity follows a Zipf law, publishing at a
//! fixed total rate into their rooms (busier rooms more often), typing now and then, moving
//! their read markers as they read.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::bail;
use rand::Rng;
use serde_json::json;

use super::actor::{Pace, Plan};
use super::fanout::join;
use super::orchestrate;
use super::{ConnectTiming, Setup};
use crate::report::Report;

/// `rooms` parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Users (one connection each).
    #[arg(long, default_value_t = 1_000)]
    pub users: usize,
    /// Rooms (public channels).
    #[arg(long, default_value_t = 50)]
    pub channels: usize,
    /// Rooms each user is in.
    #[arg(long, default_value_t = 5)]
    pub rooms_per_user: usize,
    /// Zipf exponent of room popularity.
    #[arg(long, default_value_t = 1.1, value_parser = super::zipf_exponent)]
    pub zipf: f64,
    /// Messages per second, all users together.
    #[arg(long, default_value_t = 2_000.0, value_parser = super::positive_rate)]
    pub rate: f64,
    /// Seconds of activity.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Message text bytes.
    #[arg(long, default_value_t = 64)]
    pub body: usize,
    /// A typing notice with every n-th message a user sends (0: none).
    #[arg(long, default_value_t = 5)]
    pub typing_every: u64,
    /// A read marker (`MarkRead`) after every n entries a user receives (0: none).
    #[arg(long, default_value_t = 20)]
    pub mark_read_every: u64,
}

/// Weights 1/k^s for ranks 1..=n.
fn zipf_weights(n: usize, s: f64) -> Vec<f64> {
    (1..=n).map(|k| 1.0 / (k as f64).powf(s)).collect()
}

/// Draws `k` distinct indexes by weight (without replacement): each draw takes its index's
/// weight out, so `k` draws suffice however skewed the weights (redrawing until distinct
/// could run for ages when a few rooms hold nearly all the weight).
fn draw_distinct(weights: &[f64], k: usize, rng: &mut impl Rng) -> Vec<usize> {
    let mut left = weights.to_vec();
    let mut total: f64 = left.iter().sum();
    let mut drawn = Vec::with_capacity(k);
    for _ in 0..k.min(weights.len()) {
        let mut pick = rng.random::<f64>() * total;
        // Rounding can leave `pick` just above zero at the end: the last index still in.
        let mut chosen = left.iter().rposition(|w| *w > 0.0);
        for (i, w) in left.iter().enumerate() {
            if *w > 0.0 {
                pick -= w;
                if pick <= 0.0 {
                    chosen = Some(i);
                    break;
                }
            }
        }
        let Some(i) = chosen else { break };
        total -= left[i];
        left[i] = 0.0;
        drawn.push(i);
    }
    drawn
}

/// Runs `rooms`.
pub async fn run(setup: &Setup, args: &Args) -> anyhow::Result<Report> {
    if args.users == 0 || args.channels == 0 {
        bail!("rooms needs users and channels");
    }
    super::check_rate(args.rate)?;
    let per_user = args.rooms_per_user.clamp(1, args.channels);
    let mut report = setup.report("rooms", json!({
        "users": args.users, "channels": args.channels, "rooms_per_user": per_user,
        "zipf": args.zipf, "rate": args.rate, "duration_secs": args.duration, "body_bytes": args.body,
        "typing_every": args.typing_every, "mark_read_every": args.mark_read_every,
    }));
    let mut connect = ConnectTiming::default();
    let mut errors = BTreeMap::new();
    eprintln!("connecting {} users...", args.users);
    let mut conns = setup
        .connect_many(
            args.users,
            |i| setup.user("room-user", i),
            &mut connect,
            &mut errors,
        )
        .await;
    let Some((_, first)) = conns.first_mut() else {
        bail!("no user could connect: {errors:?}");
    };
    let tag = rand::random::<u16>();
    let rooms: Vec<String> = (0..args.channels)
        .map(|i| format!("lt{}-{tag:04x}-room-{i}", setup.run_id))
        .collect();
    for room in &rooms {
        first.create_public(room).await?;
    }
    let weights = zipf_weights(args.channels, args.zipf);
    let mut rng = rand::rng();
    let mut members = Vec::new();
    for (_, mut conn) in conns {
        let mine = draw_distinct(&weights, per_user, &mut rng);
        for &r in &mine {
            join(&mut conn, &rooms[r]).await?;
        }
        members.push((conn, mine));
    }
    // Subscriptions start once every join is in (see `fanout`): otherwise the join events of
    // later users queue up unread on earlier users' connections and are drained during the
    // measured run (hundreds of MB at 2,000 users).
    let mut actors = Vec::new();
    for (mut conn, mine) in members {
        let mut publish_to = Vec::new();
        let mut subscriptions = Vec::new();
        for r in mine {
            let head = conn.subscribe(&rooms[r]).await?;
            publish_to.push((rooms[r].clone(), weights[r]));
            subscriptions.push((rooms[r].clone(), head));
        }
        let id = u32::try_from(actors.len()).unwrap_or(u32::MAX);
        actors.push((
            conn,
            Plan {
                id,
                publish_to,
                pace: Pace::Rate(args.rate / args.users as f64),
                body: args.body,
                subscriptions,
                typing_every: args.typing_every,
                mark_read_every: args.mark_read_every,
            },
        ));
    }
    report.connections = actors.len() as u64;
    connect.fill(&mut report);
    report.errors = errors;
    eprintln!("{} users active for {} s...", actors.len(), args.duration);
    orchestrate::measure(
        setup,
        actors,
        Duration::from_secs(args.duration),
        &mut report,
    )
    .await;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_draws_end_however_skewed() {
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(7);
        // Rank 1 holds nearly all the weight: redrawing until distinct would not end.
        let weights = zipf_weights(50, 40.0);
        let mut drawn = draw_distinct(&weights, 50, &mut rng);
        assert_eq!(drawn[0], 0);
        drawn.sort_unstable();
        assert_eq!(drawn, (0..50).collect::<Vec<_>>());
        assert_eq!(draw_distinct(&weights, 80, &mut rng).len(), 50);
        assert!(draw_distinct(&[], 3, &mut rng).is_empty());
    }
}
