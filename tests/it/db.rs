//! swss-common wire compatibility on a real redis-server: the coalescing rules of
//! `reference/swss-protocol.md` §3, publish density, the subscriber, the op queue, and a
//! Redis restart mid-stream.

use std::time::Duration;

use futures_util::StreamExt;
use soniclet::db::consumer_state::ConsumerStateTable;
use soniclet::db::op_queue::{ConsumerTable, ProducerTable};
use soniclet::db::producer_state::ProducerStateTable;
use soniclet::db::subscriber::SubscriberStateTable;
use soniclet::db::{Db, Fields, Op};

use crate::support::{db_config_for, RedisServer};

fn f(pairs: &[(&str, &str)]) -> Fields {
    pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

fn set(key: &str, pairs: &[(&str, &str)]) -> Op {
    Op::Set { key: key.to_owned(), fields: f(pairs) }
}

fn del(key: &str) -> Op {
    Op::Del { key: key.to_owned() }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

async fn appl(server: &RedisServer) -> Db {
    Db::open_socket(&server.socket, 0).await.unwrap()
}

fn sorted(mut fields: Fields) -> Fields {
    fields.sort();
    fields
}

/// Applies `ops` as separate producer calls, then pops once and returns what the consumer saw
/// for `key` and the published hash.
async fn round(db: &Db, producer: &ProducerStateTable, consumer: &ConsumerStateTable, ops: &[Op]) -> (Vec<Op>, Fields) {
    for op in ops {
        producer.apply(std::slice::from_ref(op)).await.unwrap();
    }
    let popped = tokio::time::timeout(Duration::from_secs(5), consumer.next()).await.unwrap().unwrap();
    while consumer.try_next().await.unwrap().is_some() {}
    let published = db.hgetall("ROUTE_TABLE:K").await.unwrap();
    (popped, sorted(published))
}

#[test]
#[ignore = "needs root, containerd, runc and redis-server: `cargo xtask ci` runs it"]
fn coalescing_rules_match_swss_common() {
    let server = RedisServer::start();
    rt().block_on(async {
        let db = appl(&server).await;
        let producer = ProducerStateTable::new(&db, "ROUTE_TABLE");
        let consumer = ConsumerStateTable::new(&db, "ROUTE_TABLE", 128).await.unwrap();

        // SET{x=1,y=2}, SET{y=3} -> one SET{x=1,y=3}.
        let (seen, hash) =
            round(&db, &producer, &consumer, &[set("K", &[("x", "1"), ("y", "2")]), set("K", &[("y", "3")])]).await;
        assert_eq!(seen.len(), 1);
        let Op::Set { fields, .. } = &seen[0] else { panic!("{seen:?}") };
        assert_eq!(sorted(fields.clone()), f(&[("x", "1"), ("y", "3")]));
        assert_eq!(hash, f(&[("x", "1"), ("y", "3")]));

        // After a pop, SET{z=9} is seen alone; the published hash merges.
        let (seen, hash) = round(&db, &producer, &consumer, &[set("K", &[("z", "9")])]).await;
        assert_eq!(seen, vec![set("K", &[("z", "9")])]);
        assert_eq!(hash, f(&[("x", "1"), ("y", "3"), ("z", "9")]));

        // DEL, SET{n=1} -> SET{n=1}; the old hash is deleted first.
        let (seen, hash) = round(&db, &producer, &consumer, &[del("K"), set("K", &[("n", "1")])]).await;
        assert_eq!(seen, vec![set("K", &[("n", "1")])]);
        assert_eq!(hash, f(&[("n", "1")]));

        // SET{q=1}, DEL -> DEL; gone.
        let (seen, hash) = round(&db, &producer, &consumer, &[set("K", &[("q", "1")]), del("K")]).await;
        assert_eq!(seen, vec![del("K")]);
        assert!(hash.is_empty());

        // An entry without attributes is written NULL=NULL, never an empty SET (a DEL).
        let (seen, hash) = round(&db, &producer, &consumer, &[set("K", &[])]).await;
        assert_eq!(seen, vec![set("K", &[("NULL", "NULL")])]);
        assert_eq!(hash, f(&[("NULL", "NULL")]));

        // A SET with no staging hash at all (what a zero-field SET leaves) pops as a DEL.
        server.cli(0, &["SADD", "ROUTE_TABLE_KEY_SET", "K"]);
        server.cli(0, &["PUBLISH", "ROUTE_TABLE_CHANNEL@0", "G"]);
        let popped = tokio::time::timeout(Duration::from_secs(5), consumer.next()).await.unwrap().unwrap();
        assert_eq!(popped, vec![del("K")]);

        // A batch [DEL K, SET K{m=1}] on K{old=1} really deletes: unlike swss-common's batched
        // API, soniclet never turns a DEL into a bare SADD.
        round(&db, &producer, &consumer, &[set("K", &[("old", "1")])]).await;
        producer.apply(&[del("K"), set("K", &[("m", "1")])]).await.unwrap();
        let popped = tokio::time::timeout(Duration::from_secs(5), consumer.next()).await.unwrap().unwrap();
        while consumer.try_next().await.unwrap().is_some() {}
        assert_eq!(popped, vec![set("K", &[("m", "1")])]);
        assert_eq!(sorted(db.hgetall("ROUTE_TABLE:K").await.unwrap()), f(&[("m", "1")]));

        // The wire format is swss-common's: staging hashes, key set, channel.
        producer.apply(&[set("10.0.0.0/24", &[("nexthop", "10.0.0.1"), ("ifname", "Ethernet0")])]).await.unwrap();
        assert_eq!(server.cli(0, &["SMEMBERS", "ROUTE_TABLE_KEY_SET"]), "10.0.0.0/24");
        assert_eq!(server.cli(0, &["HGET", "_ROUTE_TABLE:10.0.0.0/24", "ifname"]), "Ethernet0");
    });
}

#[test]
#[ignore = "needs root, containerd, runc and redis-server: `cargo xtask ci` runs it"]
fn publishes_once_per_128_new_keys_so_consumers_never_stall() {
    let server = RedisServer::start();
    rt().block_on(async {
        let db = appl(&server).await;
        let producer = ProducerStateTable::new(&db, "ROUTE_TABLE");
        // Count the notifications on the channel.
        let mut pubsub = db_pubsub(&server).await;
        pubsub.subscribe("ROUTE_TABLE_CHANNEL@0").await.unwrap();
        let consumer = ConsumerStateTable::new(&db, "ROUTE_TABLE", 128).await.unwrap();

        let n = 10_000;
        let ops: Vec<Op> = (0..n)
            .map(|i| {
                set(
                    &format!("10.{}.{}.0/24", i / 256, i % 256),
                    &[("nexthop", "10.0.0.1"), ("ifname", "Ethernet0"), ("protocol", "static")],
                )
            })
            .collect();
        producer.apply(&ops).await.unwrap();

        // Drain exactly as orchagent does: one pop of <= 128 keys per notification.
        let mut got = 0;
        let mut empty_pops = 0;
        while got < n {
            let batch = tokio::time::timeout(Duration::from_secs(5), consumer.next())
                .await
                .unwrap_or_else(|_| panic!("stalled with {} keys left", n - got))
                .unwrap();
            if batch.is_empty() {
                empty_pops += 1;
            }
            got += batch.len();
        }
        let calls = n.div_ceil(1000);
        assert!(empty_pops <= calls, "{empty_pops} empty pops for {calls} script calls");
        let mut messages = pubsub.on_message();
        let mut notifications = 0;
        while tokio::time::timeout(Duration::from_millis(300), messages.next()).await.ok().flatten().is_some() {
            notifications += 1;
        }
        assert!(notifications >= n.div_ceil(128), "{notifications} notifications for {n} keys");
        assert!(notifications <= n.div_ceil(128) + calls, "a publish tail of {notifications}");
    });
}

async fn db_pubsub(server: &RedisServer) -> redis::aio::PubSub {
    let client = redis::Client::open(format!("redis+unix://{}", server.socket.display())).unwrap();
    client.get_async_pubsub().await.unwrap()
}

#[test]
#[ignore = "needs root, containerd, runc and redis-server: `cargo xtask ci` runs it"]
fn subscriber_loads_then_follows_changes() {
    let server = RedisServer::start();
    rt().block_on(async {
        let config = Db::open_socket(&server.socket, 4).await.unwrap();
        let table = config.table("FEATURE");
        table.set("bgp", &f(&[("state", "enabled"), ("auto_restart", "enabled")])).await.unwrap();
        let mut sub = SubscriberStateTable::new(&config, "FEATURE").await.unwrap();
        let first = tokio::time::timeout(Duration::from_secs(5), sub.next()).await.unwrap().unwrap();
        assert_eq!(first.key(), "bgp");

        server.cli(4, &["HSET", "FEATURE|bgp", "state", "disabled"]);
        let change = tokio::time::timeout(Duration::from_secs(5), sub.next()).await.unwrap().unwrap();
        let Op::Set { key, fields } = change else { panic!() };
        assert_eq!(key, "bgp");
        assert_eq!(sorted(fields), f(&[("auto_restart", "enabled"), ("state", "disabled")]), "the full hash");

        server.cli(4, &["DEL", "FEATURE|bgp"]);
        assert_eq!(tokio::time::timeout(Duration::from_secs(5), sub.next()).await.unwrap().unwrap(), del("bgp"));
        // Other tables are not reported.
        server.cli(4, &["HSET", "PORT|Ethernet0", "mtu", "9100"]);
        server.cli(4, &["HSET", "FEATURE|lldp", "state", "enabled"]);
        assert_eq!(tokio::time::timeout(Duration::from_secs(5), sub.next()).await.unwrap().unwrap().key(), "lldp");
        // Non-UTF-8 written by someone else is skipped, not fatal.
        let raw = Db::open_socket(&server.socket, 4).await.unwrap();
        let mut conn = redis::Client::open(format!("redis+unix://{}?db=4", server.socket.display()))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let _: () = redis::cmd("HSET")
            .arg("FEATURE|junk")
            .arg("state")
            .arg(&[0xffu8, 0xfe][..])
            .query_async(&mut conn)
            .await
            .unwrap();
        server.cli(4, &["HSET", "FEATURE|snmp", "state", "enabled"]);
        assert_eq!(tokio::time::timeout(Duration::from_secs(5), sub.next()).await.unwrap().unwrap().key(), "snmp");
        drop(raw);
    });
}

#[test]
#[ignore = "needs root, containerd, runc and redis-server: `cargo xtask ci` runs it"]
fn op_queue_round_trip_in_order() {
    let server = RedisServer::start();
    rt().block_on(async {
        let asic = Db::open_socket(&server.socket, 1).await.unwrap();
        let producer = ProducerTable::new(&asic, "ASIC_STATE");
        let consumer = ConsumerTable::new(&asic, "ASIC_STATE", 128, true).await.unwrap();
        let rif = "SAI_OBJECT_TYPE_ROUTER_INTERFACE:oid:0x6000000000001".to_owned();
        producer
            .send(&[
                (
                    rif.clone(),
                    f(&[("SAI_ROUTER_INTERFACE_ATTR_TYPE", "SAI_ROUTER_INTERFACE_TYPE_PORT")]),
                    "Screate".into(),
                ),
                (rif.clone(), f(&[("SAI_ROUTER_INTERFACE_ATTR_MTU", "9100")]), "Sset".into()),
            ])
            .await
            .unwrap();
        assert_eq!(server.cli(1, &["LLEN", "ASIC_STATE_KEY_VALUE_OP_QUEUE"]), "6");
        let mut popped = Vec::new();
        while popped.len() < 2 {
            popped.extend(tokio::time::timeout(Duration::from_secs(5), consumer.next()).await.unwrap().unwrap());
        }
        assert_eq!(popped[0].op, "create");
        assert_eq!(popped[1].op, "set");
        assert_eq!(popped[1].fields, f(&[("SAI_ROUTER_INTERFACE_ATTR_MTU", "9100")]));
        // modifyRedis wrote the object hash.
        assert_eq!(server.cli(1, &["HGET", &format!("ASIC_STATE:{rif}"), "SAI_ROUTER_INTERFACE_ATTR_MTU"]), "9100");
        producer.send(&[(rif.clone(), vec![], "Dremove".into())]).await.unwrap();
        let removed = tokio::time::timeout(Duration::from_secs(5), consumer.next()).await.unwrap().unwrap();
        assert_eq!(removed[0].op, "remove");
        assert_eq!(server.cli(1, &["EXISTS", &format!("ASIC_STATE:{rif}")]), "0");
    });
}

#[test]
#[ignore = "needs root, containerd, runc and redis-server: `cargo xtask ci` runs it"]
fn redis_restart_mid_stream_is_survived() {
    let mut server = RedisServer::start();
    let runtime = rt();
    let (db, producer, consumer) = runtime.block_on(async {
        let db = appl(&server).await;
        let producer = ProducerStateTable::new(&db, "ROUTE_TABLE");
        let consumer = ConsumerStateTable::new(&db, "ROUTE_TABLE", 128).await.unwrap();
        producer.apply(&[set("before", &[("nexthop", "1.1.1.1")])]).await.unwrap();
        let popped = tokio::time::timeout(Duration::from_secs(5), consumer.next()).await.unwrap().unwrap();
        assert_eq!(popped.len(), 1);
        (db, producer, consumer)
    });
    server.kill();
    runtime.block_on(async {
        let err = producer.apply(&[set("during", &[("nexthop", "2.2.2.2")])]).await;
        assert!(err.is_err(), "a write while Redis is down is an error, not a hang or a crash");
    });
    server.restart();
    runtime.block_on(async {
        // The same producer and consumer carry on: reconnect, reload scripts, resubscribe.
        let mut ok = false;
        for _ in 0..50 {
            if producer.apply(&[set("after", &[("nexthop", "3.3.3.3")])]).await.is_ok() {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ok, "the producer did not recover");
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !seen.iter().any(|op: &Op| op.key() == "after") && std::time::Instant::now() < deadline {
            if let Ok(Ok(batch)) = tokio::time::timeout(Duration::from_millis(500), consumer.next()).await {
                seen.extend(batch);
            }
        }
        assert!(seen.iter().any(|op| op.key() == "after"), "the consumer resubscribed: {seen:?}");
        assert_eq!(db.hgetall("ROUTE_TABLE:after").await.unwrap(), f(&[("nexthop", "3.3.3.3")]));
    });
}

#[test]
#[ignore = "needs root, containerd, runc and redis-server: `cargo xtask ci` runs it"]
fn db_apply_writes_swssconfig_files_through_the_producer_protocol() {
    let server = RedisServer::start();
    let config = db_config_for(&server);
    let file = server.dir.path().join("routes.json");
    std::fs::write(
        &file,
        r#"[
            {"ROUTE_TABLE:10.1.0.0/24": {"nexthop": "10.0.0.1", "ifname": "Ethernet0"}, "OP": "SET"},
            {"ROUTE_TABLE:10.2.0.0/24": {"nexthop": "10.0.0.1", "ifname": "Ethernet0"}, "OP": "SET"},
            {"NEIGH_TABLE:Ethernet0:10.0.0.1": {"neigh": "00:11:22:33:44:55", "family": "IPv4"}}
        ]"#,
    )
    .unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(crate::support::SONICLET)
            .args(["db", "--db-config"])
            .arg(&config)
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["apply", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("wrote 3 entries") && stdout.contains("entries/s"), "{stdout}");
    assert_eq!(server.cli(0, &["SCARD", "ROUTE_TABLE_KEY_SET"]), "2");
    assert_eq!(server.cli(0, &["HGET", "_NEIGH_TABLE:Ethernet0:10.0.0.1", "neigh"]), "00:11:22:33:44:55");

    // A malformed file is refused whole: nothing of it is written.
    std::fs::write(
        &file,
        r#"[{"ROUTE_TABLE:10.3.0.0/24": {"nexthop": "x"}}, {"ROUTE_TABLE:10.4.0.0/24": {"mtu": 9100}}]"#,
    )
    .unwrap();
    let out = run(&["apply", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("entry [1]"));
    assert_eq!(server.cli(0, &["EXISTS", "_ROUTE_TABLE:10.3.0.0/24"]), "0");

    // sonic-db-cli's verbs.
    let out = run(&["APPL_DB", "hgetall", "_ROUTE_TABLE:10.1.0.0/24"]);
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["ifname"], "Ethernet0");
    assert!(run(&["CONFIG_DB", "hset", "FEATURE|bgp", "state", "enabled"]).status.success());
    assert_eq!(String::from_utf8_lossy(&run(&["4", "hget", "FEATURE|bgp", "state"]).stdout).trim(), "enabled");
    assert_eq!(run(&["NOPE_DB", "keys"]).status.code(), Some(4));
}

#[test]
#[ignore = "needs root, containerd, runc and redis-server: `cargo xtask ci` runs it"]
fn oversized_and_broken_entries_from_other_writers_are_skipped() {
    let server = RedisServer::start();
    rt().block_on(async {
        let db = appl(&server).await;
        let consumer = ConsumerStateTable::new(&db, "ROUTE_TABLE", 128).await.unwrap();
        // Another writer stages a 1 MB value and a non-UTF-8 one, then a good entry.
        let mut conn = redis::Client::open(format!("redis+unix://{}", server.socket.display()))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let huge = "x".repeat(1 << 20);
        let _: () = redis::pipe()
            .cmd("HSET")
            .arg("_ROUTE_TABLE:huge")
            .arg("nexthop")
            .arg(&huge)
            .ignore()
            .cmd("HSET")
            .arg("_ROUTE_TABLE:binary")
            .arg("nexthop")
            .arg(&[0xffu8, 0x00, 0xfe][..])
            .ignore()
            .cmd("HSET")
            .arg("_ROUTE_TABLE:good")
            .arg("nexthop")
            .arg("10.0.0.1")
            .ignore()
            .cmd("SADD")
            .arg("ROUTE_TABLE_KEY_SET")
            .arg("huge")
            .arg("binary")
            .arg("good")
            .ignore()
            .cmd("PUBLISH")
            .arg("ROUTE_TABLE_CHANNEL@0")
            .arg("G")
            .ignore()
            .query_async(&mut conn)
            .await
            .unwrap();
        let popped = tokio::time::timeout(Duration::from_secs(5), consumer.next()).await.unwrap().unwrap();
        assert_eq!(popped, vec![set("good", &[("nexthop", "10.0.0.1")])], "the bad ones are skipped, not fatal");
    });
}
