//! The directory as replicas on a Redis Cluster (issue 11), end to end:
//! real `directoryd --store redis://...` replicas sharing one real cluster
//! (3 masters, 3 replicas, node timeout 2 s) and one directory key, with
//! real peerds and `chatctl`, while Redis masters, whole replicas and the
//! whole store are killed under them.
//!
//! Each test owns its cluster (about 3 s to start; its nodes are stopped
//! when it is dropped, also on a panic), its directories, peers, temp dirs
//! and processes. Where redis-server is not installed the tests pass after
//! saying so, unless `PEERCHAT_REDIS_REQUIRED=1` (CI) says they must run.
//!
//! Timings are measured from the fault to the first success, by polling
//! with a deadline what can only be polled (registering, listing), and
//! printed: run with `--nocapture` to see them.
#![allow(clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use peerchat_directoryd::redis_layout::{BUCKETS, bucket_of};
use peerchat_redis_cluster::{Cluster, Options};
use serde_json::Value;
use tonic::Code;

use support::daemons::assert_exit;
use support::redis::{DirectoryApi, Identity, assert_status, bucket_key, name_in, offline, online};
use support::watch::ev;
use support::{Directory, EVENT_TIMEOUT, Peer, eventually, proc};

/// A lease long enough to outlast a Redis failover (about 4 s) several
/// times over: what must survive one is the lease itself, not a renewal.
const FAILOVER_TTL: u32 = 15;

/// A short lease, for the cases that wait for one to expire.
const EXPIRY_TTL: u32 = 3;

/// How soon after a master's kill -9 every replica must register and list
/// again: the cluster's own failover (node timeout 2 s, then an election)
/// plus the store client learning the new master.
const FAILOVER_BUDGET: Duration = Duration::from_secs(6);

/// A Redis Cluster owned by the test, or `None` (the test then passes,
/// having said why) where redis-server is not installed.
fn cluster() -> Option<Cluster> {
    Cluster::start_or_skip(Options::default())
}

/// Two directoryd replicas on `cluster`, sharing one data dir (one
/// directory key). The rate limits are raised out of the way: these tests
/// poll registrations from one address to time a recovery.
fn two_replicas(cluster: &Cluster, ttl: u32) -> (Directory, Directory) {
    let store = cluster.store_url();
    let flags = ["--store", &store, "--register-rate", "1000", "--list-rate", "1000"];
    let first = Directory::start_with(ttl, &flags);
    let second = Directory::start_sharing(&first, &flags);
    assert_eq!(first.key(), second.key(), "the replicas show different directory keys");
    (first, second)
}

/// The master serving bucket `index` now.
fn master_of(cluster: &Cluster, index: usize) -> u16 {
    cluster
        .master_for_key(&bucket_key(index, "live"))
        .unwrap_or_else(|e| panic!("who serves bucket {index}: {e}"))
}

/// The names in `by`'s `chatctl --json list`, or why there are none.
fn listed_by(by: &Peer) -> Result<Vec<String>, String> {
    let out = by.ctl(&["--json", "list"]);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    Ok(list.iter().filter_map(|p| p["name"].as_str().map(str::to_owned)).collect())
}

/// `Ok` if `names` holds every one of `want`.
fn has_all(names: Result<Vec<String>, String>, want: &[&str]) -> Result<(), String> {
    let names = names?;
    if want.iter().all(|w| names.iter().any(|n| n == w)) {
        Ok(())
    } else {
        Err(format!("listed {names:?}, want {want:?}"))
    }
}

/// `peer`'s status once it is registered in the directory at `url`.
fn registered_in(peer: &Peer, url: &str, timeout: Duration) -> Value {
    eventually(&format!("{} registered in {url}", peer.name()), timeout, || {
        let status = peer.status();
        if status["directory"] == url && status["directory_state"] == "registered" {
            Ok(status)
        } else {
            Err(status.to_string())
        }
    })
}

/// A named check that can only be polled.
type Probe<'a> = (String, Box<dyn FnMut() -> Result<(), String> + 'a>);

/// Tries every probe every 50 ms, each until it first succeeds, for at
/// most `timeout` after `since`; returns, per probe, how long after `since`
/// that was, or its last error. All are polled side by side, so that each
/// one's time is its own.
fn race(
    since: Instant,
    timeout: Duration,
    mut probes: Vec<Probe<'_>>,
) -> Vec<(String, Result<Duration, String>)> {
    let mut results: Vec<Option<Result<Duration, String>>> = vec![None; probes.len()];
    let mut last: Vec<String> = vec!["not tried".to_owned(); probes.len()];
    loop {
        for (i, (_, probe)) in probes.iter_mut().enumerate() {
            if results[i].is_some() {
                continue;
            }
            match probe() {
                Ok(()) => results[i] = Some(Ok(since.elapsed())),
                Err(why) => last[i] = why,
            }
        }
        let done = results.iter().all(Option::is_some);
        if done || since.elapsed() >= timeout {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    probes
        .into_iter()
        .zip(results.into_iter().zip(last))
        .map(|((what, _), (result, last))| (what, result.unwrap_or(Err(last))))
        .collect()
}

/// Prints every probe's time and asserts each succeeded within `budget`.
fn assert_within(what: &str, results: &[(String, Result<Duration, String>)], budget: Duration) {
    for (probe, result) in results {
        match result {
            Ok(took) => eprintln!("{what}: {probe}: {:.2} s", took.as_secs_f64()),
            Err(last) => eprintln!("{what}: {probe}: never; last: {last}"),
        }
    }
    for (probe, result) in results {
        match result {
            Ok(took) => assert!(*took <= budget, "{what}: {probe} took {took:?}, over {budget:?}"),
            Err(last) => panic!("{what}: {probe} did not succeed; last: {last}"),
        }
    }
}

#[test]
fn peers_on_two_replicas_list_each_other_chat_and_share_their_names() {
    let Some(cluster) = cluster() else { return };
    let (r1, r2) = two_replicas(&cluster, FAILOVER_TTL);
    let alice = Peer::start(&r1, "alice");
    let bob = Peer::start(&r2, "bob");

    // Each peer asks only its own replica, and sees both.
    for peer in [&alice, &bob] {
        eventually(&format!("{} lists both", peer.name()), EVENT_TIMEOUT, || {
            has_all(listed_by(peer), &["alice", "bob"])
        });
    }
    for dir in [&r1, &r2] {
        let names = DirectoryApi::new(&dir.url()).names().expect("List");
        assert_eq!(names, ["alice", "bob"], "List of {}", dir.url());
    }

    // alice looks bob up in replica 1; bob checks alice in replica 2.
    let mut wb = bob.watch();
    let out = alice.ctl_json(&["connect", "bob"]);
    assert_eq!(out["peer"], "bob", "connect printed {out}");
    wb.wait_for("connected alice", EVENT_TIMEOUT, ev::connected("alice"));
    let sent = alice.ctl_json(&["send", "across", "two", "replicas"]);
    assert_eq!(sent["state"], "delivered", "send printed {sent}");
    wb.wait_for("message", EVENT_TIMEOUT, ev::message("alice", "across two replicas"));

    // A name bound through one replica is bound in all of them.
    for (dir, name) in [(&r2, "alice"), (&r1, "Bob")] {
        let thief = Peer::unstarted(&dir.url(), name, &[]);
        let out = proc::run(&mut thief.start_command(), Duration::from_secs(30));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "a second key for {name} started via {}:\n{stderr}",
            dir.url()
        );
        assert!(stderr.contains("taken"), "{name} via {}: {stderr}", dir.url());
    }
}

/// How long a registration answered "not yet durable; retry" is retried.
const RETRY_DURABLE: Duration = Duration::from_secs(10);

/// kill -9 of a Redis master, three times (the master of alice's bucket,
/// another one, then alice's bucket's again, now served by the node
/// promoted the first time): within seconds every replica registers new
/// names and lists everyone again, and a lease taken before the crash
/// still renews. That includes new names in the dead master's buckets,
/// whose promoted master has no replica to confirm them (WAIT 1): those
/// bindings rest on it alone, stay pending, and are confirmed when their
/// names register again once the old master is back as its replica.
#[test]
fn registering_and_listing_come_back_within_seconds_of_a_master_crash() {
    let Some(mut cluster) = cluster() else { return };
    let (r1, r2) = two_replicas(&cluster, FAILOVER_TTL);
    let alice = Peer::start(&r1, "alice");
    let bob = Peer::start(&r2, "bob");
    let apis = [DirectoryApi::new(&r1.url()), DirectoryApi::new(&r2.url())];
    let peers = [&alice, &bob];

    // The test's copy of the key layout agrees with directoryd's: alice's
    // binding is where the test looks for it.
    let home = bucket_of("alice");
    let bind = bucket_key(home, "bind");
    let bound = cluster.cli(master_of(&cluster, home), &["hexists", &bind, "alice"]);
    assert_eq!(bound.expect("HEXISTS"), "1", "alice's binding is not in {bind}");

    // dora shares alice's bucket, and the test holds her lease.
    let dora_key = Identity::generate();
    let dora_name = name_in("dora", &[home]);
    let dora = apis[0].register(&dora_name, &dora_key, 1).expect("registering dora");
    let everyone = ["alice", "bob", dora_name.as_str()];

    for round in 1..=3 {
        let home_master = master_of(&cluster, home);
        let victim = if round == 2 {
            let masters = cluster.masters().expect("masters");
            *masters.iter().find(|&&m| m != home_master).expect("another master")
        } else {
            home_master
        };
        let owners: Vec<u16> = (0..BUCKETS).map(|i| master_of(&cluster, i)).collect();
        let (lost, kept): (Vec<usize>, Vec<usize>) =
            (0..BUCKETS).partition(|&i| owners[i] == victim);
        // Per replica, a new name on a surviving master, and one on the
        // victim's (orphaned, once its replica is promoted).
        let fresh: Vec<(String, Identity)> = (0..2)
            .map(|i| (name_in(&format!("new{round}r{i}n"), &kept), Identity::generate()))
            .collect();
        let orphans: Vec<(String, Identity)> = (0..2)
            .map(|i| (name_in(&format!("orphan{round}r{i}n"), &lost), Identity::generate()))
            .collect();
        apis[0].heartbeat(&dora).expect("renewing dora before the kill");

        let killed = Instant::now();
        cluster.kill9(victim).expect("kill -9 of a master");
        let mut probes: Vec<Probe<'_>> = Vec::new();
        for (i, api) in apis.iter().enumerate() {
            for (name, key) in [&fresh[i], &orphans[i]] {
                probes.push((
                    format!("replica {} registers new name {name}", i + 1),
                    Box::new(move || {
                        api.register(name, key, 1).map(drop).map_err(|s| format!("{s:?}"))
                    }),
                ));
            }
            let lease = &dora;
            probes.push((
                format!("replica {} renews dora's lease from before", i + 1),
                Box::new(move || api.heartbeat(lease).map_err(|s| format!("{s:?}"))),
            ));
            probes.push((
                format!("replica {} lists everyone (gRPC)", i + 1),
                Box::new(move || has_all(api.names().map_err(|s| format!("{s:?}")), &everyone)),
            ));
            let peer = peers[i];
            probes.push((
                format!("replica {} lists everyone (chatctl list on {})", i + 1, peer.name()),
                Box::new(move || has_all(listed_by(peer), &everyone)),
            ));
        }
        let what = format!(
            "round {round}, kill -9 of master :{victim} ({}alice's)",
            if victim == home_master { "" } else { "not " }
        );
        assert_within(&what, &race(killed, Duration::from_secs(30), probes), FAILOVER_BUDGET);

        cluster.wait_failover(victim, Duration::from_secs(20)).expect("failover");
        cluster.restart(victim).expect("restarting the old master");
        let restarted = Instant::now();
        cluster.wait_healthy(Duration::from_secs(30)).expect("the cluster healing");
        eprintln!("{what}: healthy {:.2} s after the restart", restarted.elapsed().as_secs_f64());

        // Registering an orphan name again, now that its master has a
        // replica, confirms its binding (`*` marks one still pending).
        for (api, (name, key)) in apis.iter().zip(&orphans) {
            let bind = bucket_key(bucket_of(name), "bind");
            let owner = master_of(&cluster, bucket_of(name));
            // "Healthy" is the cluster's view; the restarted node may still
            // be in its first full sync, and until it is done the
            // directory rightly answers "not yet durable; retry".
            cluster.wait_replicated(owner, Duration::from_secs(20)).expect("a replica in sync");
            let before = cluster.cli(owner, &["hget", &bind, name]).expect("HGET");
            // On a loaded machine the replica may still miss the
            // confirmation window: "not yet durable; retry" means just
            // that, and peerd retries it too. A directory whose view of
            // the cluster still lags the failover may also find no replica
            // and leave the binding pending (its answer is then a plain
            // success): the next registration waits for one again, so the
            // name is registered until the binding is confirmed.
            let again =
                eventually(&format!("{name} registered again"), RETRY_DURABLE, || {
                    match api.register(name, key, 1) {
                        Err(s) if s.code() == Code::Unavailable => Err(format!("{s:?}")),
                        Ok(_) => {
                            let now = cluster.cli(owner, &["hget", &bind, name]);
                            match now {
                                Ok(bound) if bound.ends_with('*') => {
                                    Err(format!("{name}'s binding still pending: {bound:?}"))
                                }
                                _ => Ok(Ok(())),
                            }
                        }
                        Err(other) => Ok(Err(other)),
                    }
                });
            again.unwrap_or_else(|s| panic!("{name} again: {s:?}"));
            let after = cluster.cli(owner, &["hget", &bind, name]).expect("HGET");
            eprintln!("{what}: {name}'s binding {before:?} became {after:?}");
            assert!(
                !after.is_empty() && !after.ends_with('*'),
                "{name}'s binding is {after:?} after registering again with a replica"
            );
            let thief = Identity::generate();
            assert_status(api.register(name, &thief, 1), Code::AlreadyExists, "taken", name);
        }
        apis[1].heartbeat(&dora).expect("renewing dora after the round");
    }
    // Nobody was ever asked to register again.
    for peer in peers {
        let log = peer.log_text();
        assert!(
            !log.contains("forgot our lease"),
            "{} registered again after a failover:\n{log}",
            peer.name()
        );
    }
}

/// kill -9 of one directoryd: peers given both replicas move to the other
/// within a lease, which accepts the leases they hold (one shared store),
/// and go on listing and chatting.
#[test]
fn peers_move_to_the_other_replica_when_one_dies_and_keep_their_leases() {
    let Some(cluster) = cluster() else { return };
    let (mut r1, r2) = two_replicas(&cluster, FAILOVER_TTL);
    let urls = format!("{},{}", r1.url(), r2.url());
    let alice = Peer::start_with_directory_args(&urls, "alice", &[]);
    let bob = Peer::start_with_directory_args(&urls, "bob", &[]);
    registered_in(&alice, &r1.url(), EVENT_TIMEOUT);
    registered_in(&bob, &r1.url(), EVENT_TIMEOUT);

    let killed = Instant::now();
    r1.kill9();
    let listed = eventually("both listed after the kill", EVENT_TIMEOUT, || {
        has_all(listed_by(&alice), &["alice", "bob"])?;
        has_all(listed_by(&bob), &["alice", "bob"])?;
        Ok(killed.elapsed())
    });
    let lease = Duration::from_secs(u64::from(FAILOVER_TTL));
    let moved = eventually("both registered in replica 2", lease * 2, || {
        for peer in [&alice, &bob] {
            let status = peer.status();
            if status["directory"] != r2.url().as_str() || status["directory_state"] != "registered"
            {
                return Err(format!("{}: {status}", peer.name()));
            }
        }
        Ok(killed.elapsed())
    });
    eprintln!(
        "kill -9 of replica 1: both listed {:.2} s after, both on replica 2 {:.2} s after",
        listed.as_secs_f64(),
        moved.as_secs_f64()
    );
    assert!(moved <= lease, "the peers took {moved:?} to move, more than one lease ({lease:?})");
    for peer in [&alice, &bob] {
        let log = peer.log_text();
        assert!(
            !log.contains("forgot our lease"),
            "replica 2 did not accept {}'s lease:\n{log}",
            peer.name()
        );
    }

    let mut wb = bob.watch();
    let out = alice.ctl_json(&["connect", "bob"]);
    assert_eq!(out["peer"], "bob", "connect printed {out}");
    wb.wait_for("connected alice", EVENT_TIMEOUT, ev::connected("alice"));
    let sent = alice.ctl_json(&["send", "via", "the", "second", "replica"]);
    assert_eq!(sent["state"], "delivered", "send printed {sent}");
    wb.wait_for("message", EVENT_TIMEOUT, ev::message("alice", "via the second replica"));
}

/// One replica's presence feed carries what happens through another: a
/// peer coming online, stopping (OFFLINE within a second of `peerd stop`),
/// and a lease expiring.
#[test]
fn a_replicas_presence_feed_carries_the_other_replicas_changes() {
    let Some(cluster) = cluster() else { return };
    let (r1, r2) = two_replicas(&cluster, EXPIRY_TTL);
    let api1 = DirectoryApi::new(&r1.url());
    let api2 = DirectoryApi::new(&r2.url());
    let mut feed = api1.watch();

    let starting = Instant::now();
    let mut bob = Peer::start(&r2, "bob");
    let started = Instant::now();
    let (_, at) = feed.wait_for("ONLINE bob", EVENT_TIMEOUT, online("bob"));
    eprintln!(
        "ONLINE bob on replica 1's feed {:.3} s after `peerd start` (which took {:.3} s)",
        at.duration_since(starting).as_secs_f64(),
        started.duration_since(starting).as_secs_f64()
    );

    let out = bob.peerd_stop();
    assert_exit(&out, 0, "peerd stop");
    let stopped = Instant::now();
    let (_, at) = feed.wait_for("OFFLINE bob", EVENT_TIMEOUT, offline("bob"));
    let took = at.saturating_duration_since(stopped);
    eprintln!(
        "OFFLINE bob on replica 1's feed {:.3} s after `peerd stop` returned",
        took.as_secs_f64()
    );
    assert!(took <= Duration::from_secs(1), "OFFLINE bob came {took:?} after the stop");
    bob.wait_exit(EVENT_TIMEOUT);

    // A lease taken through replica 2 and never renewed.
    let dora = api2.register("dora", &Identity::generate(), 1).expect("registering dora");
    let registered = Instant::now();
    feed.wait_for("ONLINE dora", EVENT_TIMEOUT, online("dora"));
    let (_, at) = feed.wait_for("OFFLINE dora", EVENT_TIMEOUT, offline("dora"));
    let took = at.duration_since(registered);
    eprintln!(
        "OFFLINE dora on replica 1's feed {:.3} s after her {EXPIRY_TTL} s lease began",
        took.as_secs_f64()
    );
    let ttl = Duration::from_secs(u64::from(EXPIRY_TTL));
    // The reaper sweeps once a second.
    assert!(took >= ttl - Duration::from_millis(100), "dora went {took:?} into a {ttl:?} lease");
    assert!(
        took <= ttl + Duration::from_secs(2),
        "dora's expiry came {took:?} into a {ttl:?} lease"
    );
    assert_status(
        api1.heartbeat(&dora),
        Code::NotFound,
        "register again",
        "renewing an expired lease",
    );
    assert!(api1.names().expect("List").is_empty());
}

/// The whole store down: every replica answers UNAVAILABLE ("directory
/// store unavailable") and stays up; once the store is back, registering
/// works again by itself, and the name bindings are still there.
#[test]
fn a_store_that_is_down_is_unavailable_and_comes_back_by_itself() {
    let Some(mut cluster) = cluster() else { return };
    let (mut r1, mut r2) = two_replicas(&cluster, FAILOVER_TTL);
    let apis = [DirectoryApi::new(&r1.url()), DirectoryApi::new(&r2.url())];
    let bob = Peer::start(&r1, "bob");

    // alice's name is bound, and she is offline: only the binding holds it.
    let alice_key = Identity::generate();
    let alice = apis[0].register("alice", &alice_key, 1).expect("registering alice");
    apis[0].unregister(&alice).expect("unregistering alice");

    let killed = Instant::now();
    cluster.kill9_all();
    let probes: Vec<Probe<'_>> = apis
        .iter()
        .enumerate()
        .map(|(i, api)| -> Probe<'_> {
            (
                format!("replica {} answers List UNAVAILABLE", i + 1),
                Box::new(move || match api.names() {
                    Err(s) if s.code() == Code::Unavailable => Ok(()),
                    other => Err(format!("{other:?}")),
                }),
            )
        })
        .collect();
    assert_within(
        "kill -9 of every Redis node",
        &race(killed, Duration::from_secs(10), probes),
        Duration::from_secs(5),
    );
    // Long enough for the store client's watchdog (about 4 s) to rebuild
    // it, every answer meanwhile an UNAVAILABLE with the promised words.
    let mut answers = 0;
    while killed.elapsed() < Duration::from_secs(6) {
        for (i, api) in apis.iter().enumerate() {
            let what = format!("replica {} with the store down", i + 1);
            assert_status(api.names(), Code::Unavailable, "directory store unavailable", &what);
            let erin = Identity::generate();
            assert_status(
                api.register("erin", &erin, 1),
                Code::Unavailable,
                "directory store unavailable",
                &what,
            );
            answers += 2;
        }
        // Paces the sampling; nothing is waited for.
        std::thread::sleep(Duration::from_millis(100));
    }
    r1.assert_running();
    r2.assert_running();
    eprintln!("store down: {answers} answers, all UNAVAILABLE; both replicas still running");
    let status = bob.status();
    eprintln!("bob's peerd with the store down: {status}");

    cluster.restart_all().expect("restarting every node");
    let restarted = Instant::now();
    let keys = [Identity::generate(), Identity::generate()];
    let probes: Vec<Probe<'_>> = apis
        .iter()
        .zip(&keys)
        .enumerate()
        .map(|(i, (api, key))| -> Probe<'_> {
            let name = format!("fred{i}");
            (
                format!("replica {} registers new name {name}", i + 1),
                Box::new(move || {
                    api.register(&name, key, 1).map(drop).map_err(|s| format!("{s:?}"))
                }),
            )
        })
        .collect();
    let results = race(restarted, Duration::from_secs(30), probes);
    assert_within("restart of every Redis node", &results, Duration::from_secs(15));

    // The bindings came back from the nodes' AOF.
    for api in &apis {
        let thief = Identity::generate();
        assert_status(
            api.register("alice", &thief, 1),
            Code::AlreadyExists,
            "taken",
            "another key for alice",
        );
    }
    apis[1].register("alice", &alice_key, 1).expect("alice's own key registers alice");
    eventually("bob listed again", Duration::from_secs(u64::from(FAILOVER_TTL)), || {
        has_all(listed_by(&bob), &["alice", "bob"])
    });
    r1.assert_running();
    r2.assert_running();
}

/// A new binding answered to is durable: kill -9 of its master right after
/// the answer, and after the failover another key still finds it taken.
#[test]
fn a_new_binding_survives_the_crash_of_its_master() {
    let Some(mut cluster) = cluster() else { return };
    let (r1, r2) = two_replicas(&cluster, FAILOVER_TTL);
    let (api1, api2) = (DirectoryApi::new(&r1.url()), DirectoryApi::new(&r2.url()));
    let victim = master_of(&cluster, bucket_of("carol"));

    api1.register("carol", &Identity::generate(), 1).expect("registering carol");
    let killed = Instant::now();
    cluster.kill9(victim).expect("kill -9 of carol's master");
    cluster.wait_failover(victim, Duration::from_secs(20)).expect("failover");
    let thief = Identity::generate();
    let answer =
        eventually("an answer about carol after the failover", Duration::from_secs(20), || {
            match api2.register("carol", &thief, 1) {
                Err(s) if s.code() == Code::Unavailable => Err(format!("{s:?}")),
                other => Ok(other),
            }
        });
    eprintln!(
        "carol's master killed: an answer for another key {:.2} s later: {answer:?}",
        killed.elapsed().as_secs_f64()
    );
    assert_status(answer, Code::AlreadyExists, "taken", "another key for carol after the failover");
}
