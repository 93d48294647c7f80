//! `soniclet-bench db`, `route-latency` and `netlink-routes`: the workloads of `cargo xtask
//! bench appl-db` and `bench vasic`, each printing JSON.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::{fail, Failure};

/// `soniclet-bench db`: the APPL_DB workload of `cargo xtask bench appl-db`, on the Redis at
/// `socket` (which must be empty). Prints JSON.
pub async fn appl_db(socket: &Path, entries: usize, samples: usize, batch: usize) -> Result<(), Failure> {
    use soniclet::db::consumer_state::ConsumerStateTable;
    use soniclet::db::producer_state::ProducerStateTable;
    use soniclet::db::{Db, Op};

    let db = Db::open_socket(socket, 0).await.map_err(fail)?;
    let route = |i: usize| Op::Set {
        key: format!("{}.{}.{}.0/24", 10 + i / 65536, (i / 256) % 256, i % 256),
        fields: vec![
            ("nexthop".to_owned(), format!("10.0.{}.1", i % 200)),
            ("ifname".to_owned(), format!("Ethernet{}", (i % 32) * 4)),
            ("protocol".to_owned(), "static".to_owned()),
        ],
    };
    let ops: Vec<Op> = (0..entries).map(route).collect();
    let rate = |n: usize, took: Duration| n as f64 / took.as_secs_f64();
    let producer = ProducerStateTable::new(&db, "ROUTE_TABLE");

    // 1. The producer alone, into an empty table.
    let started = Instant::now();
    producer.apply(&ops).await.map_err(fail)?;
    let produce = rate(entries, started.elapsed());

    // 2. A consumer draining that backlog, one pop of <= `batch` per notification.
    let consumer = ConsumerStateTable::new(&db, "ROUTE_TABLE", batch).await.map_err(fail)?;
    let started = Instant::now();
    let mut got = 0;
    while got < entries {
        got += consumer.next().await.map_err(fail)?.len();
    }
    let drain = rate(entries, started.elapsed());
    db.flushdb().await.map_err(fail)?;
    drop(consumer);

    // 3. Both at once: from the first write to the last pop.
    let consumer = ConsumerStateTable::new(&db, "ROUTE_TABLE", batch).await.map_err(fail)?;
    let started = Instant::now();
    let writer = {
        let producer = producer.clone();
        let ops = ops.clone();
        tokio::spawn(async move {
            for chunk in ops.chunks(1000) {
                producer.apply(chunk).await?;
            }
            Ok::<_, soniclet::db::DbError>(())
        })
    };
    let mut got = 0;
    while got < entries {
        got += consumer.next().await.map_err(fail)?.len();
    }
    let end_to_end = rate(entries, started.elapsed());
    writer.await.map_err(fail)?.map_err(fail)?;
    db.flushdb().await.map_err(fail)?;
    drop(consumer);

    // 4. Latency of one update on an idle system: write to pop.
    let consumer = ConsumerStateTable::new(&db, "ROUTE_TABLE", batch).await.map_err(fail)?;
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples {
        let op = route(i);
        let started = Instant::now();
        producer.apply(std::slice::from_ref(&op)).await.map_err(fail)?;
        loop {
            if !consumer.next().await.map_err(fail)?.is_empty() {
                break;
            }
        }
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    db.flushdb().await.map_err(fail)?;

    // 5. The ceiling: plain pipelined HSETs of the same entries.
    let plain: Vec<(String, soniclet::db::Fields)> = ops
        .iter()
        .map(|op| match op {
            Op::Set { key, fields } => (format!("ROUTE_TABLE:{key}"), fields.clone()),
            Op::Del { key } => (key.clone(), Vec::new()),
        })
        .collect();
    let started = Instant::now();
    db.hset_many(&plain).await.map_err(fail)?;
    let raw = rate(entries, started.elapsed());
    db.flushdb().await.map_err(fail)?;

    println!(
        "{}",
        json!({
            "entries": entries,
            "pop_batch": batch,
            "producer_per_s": produce,
            "consumer_drain_per_s": drain,
            "end_to_end_per_s": end_to_end,
            "latency_p50_ms": pct(0.50),
            "latency_p99_ms": pct(0.99),
            "raw_hset_per_s": raw,
        })
    );
    Ok(())
}

/// `soniclet-bench route-latency`: one route at a time, from its APPL_DB write (the
/// ProducerStateTable protocol) to its entry in ASIC_STATE; `samples` routes via `nexthop` on
/// `ifname`, removed afterwards. Prints JSON with the p50 and p99 in milliseconds.
pub async fn route_latency(socket: &Path, samples: usize, ifname: &str, nexthop: &str) -> Result<(), Failure> {
    use soniclet::db::producer_state::ProducerStateTable;
    use soniclet::db::Db;
    use soniclet::vasic::sai;

    let appl = Db::open_socket(socket, 0).await.map_err(fail)?;
    let asic = Db::open_socket(socket, 1).await.map_err(fail)?;
    let producer = ProducerStateTable::new(&appl, "ROUTE_TABLE");
    let fields = vec![("nexthop".to_owned(), nexthop.to_owned()), ("ifname".to_owned(), ifname.to_owned())];
    let mut latencies = Vec::with_capacity(samples);
    let mut written = Vec::with_capacity(samples);
    for i in 0..samples {
        let prefix = format!("10.201.{}.{}/32", i / 256, i % 256);
        let started = Instant::now();
        producer.set(&prefix, &fields).await.map_err(fail)?;
        let deadline = started + Duration::from_secs(10);
        // The route entry's key names the default router's VID, which only orch knows: match
        // the dest among the route entries.
        let pattern = format!("ASIC_STATE:{}:{{\"dest\":\"{prefix}\"*", sai::ObjectType::RouteEntry.name());
        loop {
            if !asic.keys(&pattern).await.map_err(fail)?.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                return Err(fail(format!("{prefix} never reached ASIC_STATE")));
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        written.push(prefix);
    }
    for prefix in &written {
        producer.del(prefix).await.map_err(fail)?;
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    println!("{}", json!({ "samples": samples, "p50_ms": at(0.5), "p99_ms": at(0.99) }));
    Ok(())
}

/// `soniclet-bench netlink-routes`: the baseline of `cargo xtask bench vasic`: `count` /32
/// routes via `nexthop` on `dev` straight over rtnetlink (the virtual ASIC's own adapter, no
/// Redis), into table `table`, then removed. Prints JSON with the seconds the adds took.
pub async fn netlink_routes(count: usize, dev: &str, nexthop: &str, table: u32) -> Result<(), Failure> {
    use soniclet::vasic::kernel::Kernel;
    use soniclet::vasic::netlink::Netlink;
    use soniclet::vasic::syncd::{KernelOp, RouteVia};

    let kernel = Netlink::connect().map_err(fail)?;
    let gateway: std::net::IpAddr = nexthop.parse().map_err(|_| fail(format!("{nexthop:?} is not an IP")))?;
    let route = |i: usize, add: bool| KernelOp::Route {
        table,
        dest: (std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 100, (i / 256) as u8, (i % 256) as u8)), 32),
        via: RouteVia::Gateways(vec![(gateway, dev.to_owned())]),
        add,
    };
    let started = Instant::now();
    for i in 0..count {
        kernel.apply(&route(i, true)).await.map_err(fail)?;
    }
    let took = started.elapsed().as_secs_f64();
    for i in 0..count {
        kernel.apply(&route(i, false)).await.map_err(fail)?;
    }
    println!("{}", json!({ "routes": count, "seconds": took }));
    Ok(())
}
