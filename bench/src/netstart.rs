//! Start latency with a private network (`network: private`, without and
//! with one published port) against `ctr run -d --cni` on the same
//! containerd with the same CNI chain (bridge + host-local + tuning, and
//! the loopback network go-cni adds), samples interleaved.
//!
//! ctr 1.6 reads its plugins from /opt/cni/bin and its configuration from
//! /etc/cni/net.d, and has no flag for either: it runs in a mount namespace
//! of the bench's own where Debian's /usr/lib/cni is bound on /opt/cni/bin
//! and the bench's conflist on /etc/cni/net.d (nothing on the host
//! changes). ctr cannot publish a port, so the published port's cost
//! (portmap) is the difference between the two platform figures. `ctr run
//! -d` never runs CNI DEL: the bench removes the leases, go-cni's cache and
//! the bridge afterwards.

use crate::progress;
use crate::report::Row;
use crate::scenarios::{ms, summary_json, Ctx, Outcome, SLEEP};
use crate::stats::summarize;
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::process::Stdio;
use std::time::Instant;

const BRIDGE: &str = "skbench0";
const NETWORK: &str = "skiff-bench";
const SUBNET: &str = "10.214.0.0/22";
/// go-cni's result cache (ctr writes it on the host's /var/lib).
const CNI_CACHE: &str = "/var/lib/cni/results";

/// A shell holding the bench's mount namespace; ctr runs in it by nsenter.
struct MountNs {
    child: tokio::process::Child,
    pid: u32,
}

impl MountNs {
    async fn start(ctx: &Ctx) -> Result<MountNs> {
        let dir = ctx.work.join("ctr-cni");
        let conf = dir.join("net.d");
        let (upper, work) = (dir.join("etc-upper"), dir.join("etc-work"));
        for d in [&conf, &upper, &work] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let conflist = json!({
            "cniVersion": "1.0.0",
            "name": NETWORK,
            "plugins": [
                { "type": "bridge", "bridge": BRIDGE, "isGateway": true, "ipMasq": false,
                  "hairpinMode": true,
                  "ipam": { "type": "host-local", "ranges": [[{ "subnet": SUBNET }]],
                            "routes": [{ "dst": "0.0.0.0/0" }],
                            "dataDir": dir.join("ipam") } },
                { "type": "tuning", "sysctl": { "net.ipv6.conf.eth0.disable_ipv6": "1" } },
            ],
        });
        std::fs::write(conf.join("10-skiff-bench.conflist"), conflist.to_string())?;
        let script = format!(
            "set -e; mount --make-rprivate /; \
             mount -t overlay overlay -o lowerdir=/etc,upperdir={upper},workdir={work} /etc; \
             mkdir -p /etc/cni/net.d; mount --bind {conf} /etc/cni/net.d; \
             mount -t tmpfs tmpfs /opt; mkdir -p /opt/cni/bin; mount --bind /usr/lib/cni /opt/cni/bin; \
             echo ready; exec sleep infinity",
            upper = upper.display(),
            work = work.display(),
            conf = conf.display(),
        );
        let mut child = tokio::process::Command::new("unshare")
            .args(["-m", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("unshare -m")?;
        let pid = child.id().context("the mount namespace's shell")?;
        let mut out = child.stdout.take().expect("piped");
        let mut line = [0u8; 6];
        tokio::io::AsyncReadExt::read_exact(&mut out, &mut line)
            .await
            .context("setting up the bench's mount namespace (is overlayfs available?)")?;
        if &line != b"ready\n" {
            bail!("the bench's mount namespace did not come up");
        }
        Ok(MountNs { child, pid })
    }

    /// `nsenter --mount=... ctr --address <socket> -n <ns> <args>`.
    async fn ctr(&self, ctx: &Ctx, ns: &str, args: &[&str]) -> Result<()> {
        let out = tokio::process::Command::new("nsenter")
            .arg(format!("--mount=/proc/{}/ns/mnt", self.pid))
            .arg("--")
            .arg(&ctx.ctr.bin)
            .arg("--address")
            .arg(&ctx.ctr.socket)
            .args(["-n", ns])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .context("nsenter ctr")?;
        if !out.status.success() {
            bail!(
                "ctr {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// `ctr run -d --cni --snapshotter overlayfs <image> <id> sleep ...`.
    async fn run_cni(&self, ctx: &Ctx, ns: &str, id: &str) -> Result<()> {
        let mut run = vec![
            "run",
            "-d",
            "--cni",
            "--snapshotter",
            "overlayfs",
            &ctx.image,
            id,
        ];
        run.extend_from_slice(SLEEP);
        self.ctr(ctx, ns, &run).await
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Removes what `ctr run -d --cni` leaves: leases, go-cni's cache, the bridge.
async fn clean(ctx: &Ctx) {
    let _ = std::fs::remove_dir_all(ctx.work.join("ctr-cni").join("ipam"));
    if let Ok(entries) = std::fs::read_dir(CNI_CACHE) {
        for e in entries.flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{NETWORK}-"))
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let _ = tokio::process::Command::new("ip")
        .args(["link", "del", BRIDGE])
        .output()
        .await;
}

pub async fn start_latency_network(ctx: &Ctx) -> Result<Outcome> {
    const NS: &str = "skiff-bench-ctr-cni";
    let n = ctx.samples;
    progress("start latency, private network: warming up");
    ctx.ctr.pull(NS, &ctx.image).await?;
    let mount_ns = MountNs::start(ctx).await?;
    let result = samples(ctx, &mount_ns, NS, n).await;
    mount_ns.stop().await;
    let _ = ctx.ctr.clean_namespace(NS).await;
    clean(ctx).await;
    let (private, published, raw, timings) = result?;
    let (p, pp, c) = (summarize(&private), summarize(&published), summarize(&raw));
    let rows = vec![
        Row::vs_raw(
            "start, network private: p50",
            "ms",
            p.p50,
            "ctr run -d --cni",
            c.p50,
        )
        .ratio_target(1.0, true),
        Row::vs_raw(
            "start, network private: p99",
            "ms",
            p.p99,
            "ctr run -d --cni",
            c.p99,
        ),
        Row::vs_raw(
            "start, network private + 1 published port: p50 (portmap's cost: the difference to the row above)",
            "ms",
            pp.p50,
            "ctr run -d --cni (no port)",
            c.p50,
        ),
    ];
    let details = json!({
        "samples": n,
        "platform_private_ms": summary_json(&p),
        "platform_private_port_ms": summary_json(&pp),
        "ctr_cni_ms": summary_json(&c),
        "platform_port_timings": timings,
    });
    Ok(Outcome { rows, details })
}

type Samples = (Vec<f64>, Vec<f64>, Vec<f64>, Vec<serde_json::Value>);

async fn samples(ctx: &Ctx, mount_ns: &MountNs, ns: &str, n: usize) -> Result<Samples> {
    // Warm-up (untimed): the bridge, the plugins' pages, the shims.
    let id = format!("bench-{}", uuid::Uuid::new_v4().simple());
    mount_ns.run_cni(ctx, ns, &id).await?;
    ctx.ctr.remove(ns, &id).await?;
    let c = ctx
        .api
        .create_networked(&ctx.image, SLEEP, &ctx.run_id, &[8080])
        .await?;
    ctx.api.wait_running(&c.id.to_string(), 60).await?;
    ctx.api.delete(&c.id.to_string()).await?;

    let (mut private, mut published, mut raw, mut timings) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        if i % 10 == 0 {
            progress(&format!(
                "start latency, private network: sample {}/{n}",
                i + 1
            ));
        }
        for (ports, into) in [(&[][..], &mut private), (&[8080u16][..], &mut published)] {
            let t = Instant::now();
            let c = ctx
                .api
                .create_networked(&ctx.image, SLEEP, &ctx.run_id, ports)
                .await?;
            let w = ctx.api.wait_running(&c.id.to_string(), 60).await?;
            into.push(ms(t.elapsed()));
            if !ports.is_empty() {
                timings.push(json!(w.timings));
            }
            ctx.api.delete(&c.id.to_string()).await?;
        }
        let id = format!("bench-{}", uuid::Uuid::new_v4().simple());
        let t = Instant::now();
        mount_ns.run_cni(ctx, ns, &id).await?;
        raw.push(ms(t.elapsed()));
        ctx.ctr.remove(ns, &id).await?;
    }
    Ok((private, published, raw, timings))
}
