//! The container network against the real CNI plugins, nftables and
//! kernel, without containerd: namespaces set up by [`Network`] with
//! busybox run in them by `ip netns exec`. Runs as root (test.sh does);
//! uses a bridge, subnet and port range of its own and tears them down.

use skiff_worker::net::ports::Protocol;
use skiff_worker::net::{Network, NetworkConfig, Published, Request};
use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn config(dir: &std::path::Path) -> NetworkConfig {
    let n = std::process::id() % 200;
    NetworkConfig {
        bridge: format!("sknt{n}"),
        subnet: format!("10.215.{n}.0/24").parse().unwrap(),
        plugin_dir: "/usr/lib/cni".into(),
        run_dir: dir.join("net"),
        host_ip: "127.0.0.1".parse().unwrap(),
        port_range: (21000, 21099),
        egress_nat: false,
        port_wait: Duration::from_secs(5),
    }
}

/// `busybox httpd` serving "hello from <name>" in `netns` on port 80.
fn serve(netns: &str, dir: &std::path::Path, name: &str) -> Child {
    let www = dir.join(format!("www-{name}"));
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), format!("hello from {name}\n")).unwrap();
    Command::new("ip")
        .args([
            "netns", "exec", netns, "busybox", "httpd", "-f", "-p", "80", "-h",
        ])
        .arg(&www)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("busybox httpd")
}

/// GETs `url`, from inside `netns` when given; the body, or None.
fn fetch(netns: Option<&str>, url: &str) -> Option<String> {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]);
            c
        }
        None => Command::new("env"),
    };
    // busybox 1.35's wget crashes on -T: bound it with timeout instead.
    let out = cmd
        .args(["timeout", "3", "busybox", "wget", "-q", "-O-", url])
        .output()
        .expect("wget");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Retries `fetch` for a moment (httpd takes a little to listen).
fn fetch_eventually(netns: Option<&str>, url: &str) -> Option<String> {
    for _ in 0..20 {
        if let Some(body) = fetch(netns, url) {
            return Some(body);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn ns_name(net: &Network, id: &str) -> String {
    net.netns_path(id)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn groups_talk_tenants_do_not_ports_publish_and_everything_is_torn_down() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let bridge = cfg.bridge.clone();
    let net = Network::new(cfg).expect("plugins present");
    net.restore(&HashSet::new()).await.expect("tables load");

    let port = 21007;
    let web = Request {
        group: Some("g1".into()),
        ports: vec![Published {
            container_port: 80,
            protocol: Protocol::Tcp,
            host_port: port,
        }],
    };
    let same_group = Request {
        group: Some("g1".into()),
        ports: vec![],
    };
    let other = Request {
        group: Some("g2".into()),
        ports: vec![],
    };
    let a_ip = net.attach("a", "web-a", &web).await.expect("attach a");
    let b_ip = net
        .attach("b", "peer-b", &same_group)
        .await
        .expect("attach b");
    let c_ip = net.attach("c", "other-c", &other).await.expect("attach c");
    let d_ip = net
        .attach("d", "solo-d", &Request::default())
        .await
        .expect("attach d");
    assert_eq!(net.ip("a").await, Some(a_ip));
    let all: HashSet<Ipv4Addr> = [a_ip, b_ip, c_ip, d_ip].into();
    assert_eq!(all.len(), 4, "distinct addresses");
    let (hosts, hostname) = net.hosts_files("a");
    assert!(std::fs::read_to_string(hosts)
        .unwrap()
        .contains(&format!("{a_ip}\tweb-a")));
    assert_eq!(std::fs::read_to_string(hostname).unwrap(), "web-a\n");

    let (na, nb, nc, nd) = (
        ns_name(&net, "a"),
        ns_name(&net, "b"),
        ns_name(&net, "c"),
        ns_name(&net, "d"),
    );
    let mut httpd = serve(&na, dir.path(), "a");
    let a_url = format!("http://{a_ip}/");
    let published = format!("http://127.0.0.1:{port}/");
    let result = std::panic::AssertUnwindSafe(async {
        // From the host: the container address and the published port.
        assert_eq!(
            fetch_eventually(None, &a_url).as_deref(),
            Some("hello from a\n")
        );
        assert_eq!(fetch(None, &published).as_deref(), Some("hello from a\n"));
        // A host process cannot take the published port meanwhile.
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_err());
        // Same group: reaches it (the positive control of the denials below).
        assert_eq!(fetch(Some(&nb), &a_url).as_deref(), Some("hello from a\n"));
        // Another group, and no group: refused.
        assert_eq!(fetch(Some(&nc), &a_url), None);
        assert_eq!(fetch(Some(&nd), &a_url), None);
        // The host through the gateway (where an agent listening on every
        // address would be), even for a member of the group: refused. The
        // port is published on 127.0.0.1 only, which a container's own
        // loopback shadows.
        let gateway = Ipv4Addr::from(u32::from(a_ip) & !0xff | 1);
        let _host_service = std::net::TcpListener::bind((gateway, 21099)).unwrap();
        for (ns, url) in [
            (&nb, format!("http://{gateway}:{port}/")),
            (&nb, format!("http://{gateway}:21099/")),
            (&nc, format!("http://{gateway}:21099/")),
        ] {
            assert_eq!(fetch(Some(ns), &url), None, "{url} from {ns}");
        }
        // Positive control: the host service is there (the host reaches it).
        std::net::TcpStream::connect((gateway, 21099)).expect("host reaches its own service");
    });
    let outcome = futures::FutureExt::catch_unwind(result).await;
    let _ = httpd.kill();
    let _ = httpd.wait();

    for id in ["a", "b", "c", "d"] {
        net.detach(id).await.expect("detach");
        assert!(!net.netns_path(id).exists(), "{id}'s namespace is gone");
    }
    assert!(net.held_ports().is_empty());
    // The published port is a free port of the host again.
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("port released");
    net.teardown_all().await.expect("teardown");
    assert!(!std::path::Path::new("/sys/class/net")
        .join(&bridge)
        .exists());
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
