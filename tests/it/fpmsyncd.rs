//! `soniclet fpmsyncd` on a real redis-server, fed FPM frames laid out as zebra 8.4's
//! `dplane_fpm_nl` writes them, with a ConsumerStateTable popping APPL_DB `ROUTE_TABLE` as
//! orchagent does: entries as SONiC's fpmsyncd writes them, zebra's update (a DEL and a NEW
//! in one frame) as one SET, a malformed stream dropped without harm, and after a `kill -9`
//! the routes zebra no longer has swept once its replay is quiet.

use std::io::Write;
use std::net::{IpAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use soniclet::db::consumer_state::ConsumerStateTable;
use soniclet::db::{Db, Op};
use soniclet::fpmsyncd::frame;
use soniclet::fpmsyncd::rtmsg::{encode, Change, NextHop, Route, RTN_BLACKHOLE, RTN_UNICAST};

use crate::support::{db_config_for, RedisServer, SONICLET};

const LO: u32 = 1;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn route(dst: &str, len: u8, hops: &[(&str, u8)]) -> Route {
    Route {
        change: Change::New,
        dst: ip(dst),
        dst_len: len,
        table: 254,
        protocol: 186,
        route_type: RTN_UNICAST,
        next_hops: hops.iter().map(|(g, h)| NextHop { gateway: Some(ip(g)), ifindex: LO, hops: *h }).collect(),
        nh_id: None,
    }
}

fn withdraw(mut route: Route) -> Route {
    route.change = Change::Del;
    route.route_type = 0;
    route.next_hops.clear();
    route
}

/// One frame of these messages, as zebra sends an install (one) or an update (two).
fn frame_of(routes: &[Route]) -> Vec<u8> {
    frame::encode(&routes.iter().flat_map(encode).collect::<Vec<u8>>())
}

struct Fpmsyncd {
    child: Child,
}

impl Fpmsyncd {
    fn start(port: u16, config: &std::path::Path, log: &std::path::Path) -> Self {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child = Command::new(SONICLET)
            .args(["fpmsyncd", "--listen", &format!("127.0.0.1:{port}"), "--db-config"])
            .arg(config)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Self { child }
    }

    /// zebra's side: connect as `dplane_fpm_nl` retries until fpmsyncd listens.
    fn connect(port: u16) -> TcpStream {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(stream) => return stream,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("fpmsyncd never listened: {e}"),
            }
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Fpmsyncd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// orchagent's side: everything popped until `done` holds of it, or the deadline.
async fn pop_until(consumer: &ConsumerStateTable, what: &str, done: impl Fn(&[Op]) -> bool) -> Vec<Op> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done(&seen) {
        assert!(Instant::now() < deadline, "timed out waiting until {what}: {seen:?}");
        seen.extend(consumer.pops().await.unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seen
}

fn fields_of<'a>(ops: &'a [Op], key: &str) -> Option<&'a [(String, String)]> {
    ops.iter().rev().find_map(|op| match op {
        Op::Set { key: k, fields } if k == key => Some(fields.as_slice()),
        _ => None,
    })
}

fn pairs(fields: &[(String, String)]) -> Vec<(&str, &str)> {
    let mut pairs: Vec<(&str, &str)> = fields.iter().map(|(f, v)| (f.as_str(), v.as_str())).collect();
    pairs.sort();
    pairs
}

#[test]
#[ignore = "needs root, containerd, runc and redis-server: `cargo xtask ci` runs it"]
fn fpmsyncd_writes_zebras_routes_as_sonic_does_and_sweeps_what_zebra_lost() {
    let server = RedisServer::start();
    let config = db_config_for(&server);
    let log = server.dir.path().join("fpmsyncd.log");
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut fpmsyncd = Fpmsyncd::start(port, &config, &log);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let show_log = || std::fs::read_to_string(&log).unwrap_or_default();

    let a = route("10.1.0.0", 24, &[("10.0.0.1", 0)]);
    let b = route("10.2.0.0", 24, &[("10.0.0.1", 0), ("10.0.0.5", 1)]);
    let mut c = route("192.0.2.0", 24, &[]);
    c.route_type = RTN_BLACKHOLE;
    let a2 = route("10.1.0.0", 24, &[("10.0.0.9", 0)]);
    runtime.block_on(async {
        let appl = Db::open_socket(&server.socket, 0).await.unwrap();
        let consumer = ConsumerStateTable::new(&appl, "ROUTE_TABLE", 128).await.unwrap();

        let mut zebra = Fpmsyncd::connect(port);
        for frame in
            [frame_of(std::slice::from_ref(&a)), frame_of(std::slice::from_ref(&b)), frame_of(std::slice::from_ref(&c))]
        {
            zebra.write_all(&frame).unwrap();
        }
        // zebra's update of a: a DEL and a NEW in one frame, split mid-frame on the wire.
        let update = frame_of(&[withdraw(a.clone()), a2.clone()]);
        zebra.write_all(&update[..10]).unwrap();
        zebra.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        zebra.write_all(&update[10..]).unwrap();
        let seen = pop_until(&consumer, "a's update is popped", |ops| {
            fields_of(ops, "10.1.0.0/24").is_some_and(|f| f.iter().any(|(_, v)| v == "10.0.0.9"))
                && fields_of(ops, "192.0.2.0/24").is_some()
        })
        .await;
        assert_eq!(
            pairs(fields_of(&seen, "10.1.0.0/24").unwrap()),
            [("ifname", "lo"), ("nexthop", "10.0.0.9"), ("protocol", "bgp"), ("weight", "1")]
        );
        assert_eq!(
            pairs(fields_of(&seen, "10.2.0.0/24").unwrap()),
            [("ifname", "lo,lo"), ("nexthop", "10.0.0.1,10.0.0.5"), ("protocol", "bgp"), ("weight", "1,1")]
        );
        assert_eq!(pairs(fields_of(&seen, "192.0.2.0/24").unwrap()), [("blackhole", "true"), ("protocol", "bgp")]);

        // A malformed header drops the connection; fpmsyncd stays up for zebra's reconnect.
        zebra.write_all(&[1, 1, 0, 6]).unwrap();
        zebra.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(std::io::Read::read(&mut zebra, &mut byte).unwrap_or(0), 0, "fpmsyncd closes the connection");
        assert!(fpmsyncd.running(), "fpmsyncd survives a malformed stream:\n{}", show_log());

        // kill -9 while c is withdrawn: zebra's replay after the restart lacks it.
        fpmsyncd.kill();
        drop(zebra);
        let mut fpmsyncd = Fpmsyncd::start(port, &config, &log);
        let mut zebra = Fpmsyncd::connect(port);
        zebra.write_all(&frame_of(std::slice::from_ref(&a2))).unwrap();
        zebra.write_all(&frame_of(std::slice::from_ref(&b))).unwrap();
        let started = Instant::now();
        let seen = pop_until(&consumer, "c is swept", |ops| {
            ops.iter().any(|op| matches!(op, Op::Del { key } if key == "192.0.2.0/24"))
        })
        .await;
        assert!(started.elapsed() >= Duration::from_secs(2), "swept only once the replay was quiet");
        assert!(
            !seen.iter().any(|op| matches!(op, Op::Del { key } if key != "192.0.2.0/24")),
            "only c is swept: {seen:?}"
        );
        assert!(appl.hgetall("ROUTE_TABLE:10.1.0.0/24").await.unwrap().iter().any(|(_, v)| v == "10.0.0.9"));
        assert!(appl.hgetall("ROUTE_TABLE:192.0.2.0/24").await.unwrap().is_empty());
        assert!(fpmsyncd.running(), "{}", show_log());
    });
}
