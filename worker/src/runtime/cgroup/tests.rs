//! Detection, reading and removal against fixture trees of both layouts.

use super::*;

type Tree = &'static [(&'static str, &'static str)];

/// A fixture root holding `files` (path, contents) and empty `dirs`.
fn tree(files: Tree, dirs: &[&str]) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = root.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    for dir in dirs {
        std::fs::create_dir_all(root.path().join(dir)).unwrap();
    }
    root
}

const V1: Tree = &[
    ("cpuacct/cpuacct.usage", "42421377142832\n"),
    ("cpu/cpu.shares", "1024\n"),
    ("memory/memory.max_usage_in_bytes", "12071890944\n"),
    ("pids/cgroup.procs", "1\n"),
];
const V1_CPU_CPUACCT: Tree = &[
    ("cpu,cpuacct/cpuacct.usage", "1\n"),
    ("memory/memory.max_usage_in_bytes", "1\n"),
    ("pids/cgroup.procs", ""),
];
/// systemd's hybrid mode: v1 controllers plus a controller-less v2 tree.
const HYBRID: Tree = &[
    ("cpuacct/cpuacct.usage", "1\n"),
    ("memory/memory.max_usage_in_bytes", "1\n"),
    ("pids/cgroup.procs", ""),
    ("unified/cgroup.controllers", ""),
];
const V2: Tree = &[(
    "cgroup.controllers",
    "cpuset cpu io memory hugetlb pids rdma misc\n",
)];
const V2_NO_MEMORY: Tree = &[("cgroup.controllers", "cpuset cpu io pids\n")];
const V1_NO_CPUACCT: Tree = &[
    ("memory/memory.max_usage_in_bytes", "1\n"),
    ("pids/cgroup.procs", ""),
];
const V1_NO_PIDS: Tree = &[
    ("cpuacct/cpuacct.usage", "1\n"),
    ("memory/memory.max_usage_in_bytes", "1\n"),
];
const V2_NO_PIDS: Tree = &[("cgroup.controllers", "cpuset cpu io memory\n")];

#[derive(Debug)]
enum Expect {
    V1(&'static str),
    V2,
    /// Refused, with these in the message.
    Refused(&'static [&'static str]),
}

#[test]
fn detection_finds_the_layout_or_refuses_naming_what_it_looked_for() {
    let cases: &[(&str, Tree, Expect)] = &[
        ("v1", V1, Expect::V1("cpuacct")),
        (
            "v1 with cpu,cpuacct",
            V1_CPU_CPUACCT,
            Expect::V1("cpu,cpuacct"),
        ),
        ("hybrid", HYBRID, Expect::V1("cpuacct")),
        ("v2", V2, Expect::V2),
        (
            "v2 without memory",
            V2_NO_MEMORY,
            Expect::Refused(&["cgroup.controllers listing cpu, memory and pids (it lacks memory)"]),
        ),
        (
            "v2 without pids",
            V2_NO_PIDS,
            Expect::Refused(&["(it lacks pids)"]),
        ),
        (
            "v1 without pids",
            V1_NO_PIDS,
            Expect::Refused(&["/pids/cgroup.procs", "(no pids hierarchy)"]),
        ),
        (
            "v1 without cpuacct",
            V1_NO_CPUACCT,
            Expect::Refused(&["(no cpuacct hierarchy)", "(no such file)"]),
        ),
        (
            "empty",
            &[],
            Expect::Refused(&[
                "/cgroup.controllers",
                "/cpuacct/cpuacct.usage",
                "/cpu,cpuacct/cpuacct.usage",
                "/memory/memory.max_usage_in_bytes",
                "(no cpuacct and no memory and no pids hierarchy)",
                "neither limited nor metered",
            ]),
        ),
    ];
    for (name, files, expect) in cases {
        let root = tree(files, &[]);
        let found = CgroupLayout::detect(root.path());
        match (expect, &found) {
            (Expect::V1(dir), Ok(CgroupLayout::V1 { root: r, cpuacct })) => {
                assert_eq!((r.as_path(), cpuacct), (root.path(), dir), "{name}");
            }
            (Expect::V2, Ok(CgroupLayout::V2 { root: r })) => {
                assert_eq!(r, root.path(), "{name}");
            }
            (Expect::Refused(parts), Err(e)) => {
                let message = e.to_string();
                for part in *parts {
                    assert!(message.contains(part), "{name}: {part:?} in {message}");
                }
            }
            _ => panic!("{name}: expected {expect:?}, found {found:?}"),
        }
    }
}

#[test]
fn flat_keyed_files_parse() {
    let oom_control = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
    let events = "low 0\nhigh 0\nmax 7\noom 1\noom_kill 0\noom_group_kill 1\n";
    let cpu_stat = "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n";
    let cases: &[(&str, &str, Option<u64>)] = &[
        (oom_control, "oom_kill", Some(2)),
        (oom_control, "oom_kill_disable", Some(0)),
        (events, "oom", Some(1)),
        (events, "oom_group_kill", Some(1)),
        (cpu_stat, "usage_usec", Some(1500)),
        (cpu_stat, "usage", None),
        ("usage_usec x\n", "usage_usec", None),
        ("", "oom_kill", None),
    ];
    for (text, key, value) in cases {
        assert_eq!(keyed(text, key), *value, "{key} in {text:?}");
    }
    assert_eq!(v2_cpu_usage_ns(cpu_stat), Some(1_500_000));
    assert_eq!(v2_cpu_usage_ns("user_usec 3\n"), None);
    assert_eq!(
        v2_cpu_usage_ns("usage_usec 18446744073709552\n"),
        Some(u64::MAX)
    );
}

#[test]
fn oom_kills_are_read_from_either_format() {
    let cases: &[(&str, bool, bool)] = &[
        // (text, v1 says killed, v2 says killed)
        ("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n", true, true),
        (
            "oom_kill_disable 0\nunder_oom 1\noom_kill 0\n",
            false,
            false,
        ),
        ("oom 1\noom_kill 0\noom_group_kill 1\n", false, true),
        ("oom 3\noom_kill 0\n", false, false),
        // Kernels before 4.13 have no oom_kill line in oom_control.
        ("oom_kill_disable 0\nunder_oom 0\n", false, false),
    ];
    for (text, v1, v2) in cases {
        assert_eq!(v1_oom_killed(text), *v1, "v1 {text:?}");
        assert_eq!(v2_oom_killed(text), *v2, "v2 {text:?}");
    }
}

#[test]
fn controllers_missing_from_the_list() {
    let cases: &[(&str, &[&str])] = &[
        ("cpuset cpu io memory pids\n", &[]),
        ("pids memory cpu", &[]),
        ("cpuset cpu io pids\n", &["memory"]),
        ("cpuacct memory pids\n", &["cpu"]),
        ("memory cpu", &["pids"]),
        ("", &["cpu", "memory", "pids"]),
    ];
    for (listed, missing) in cases {
        assert_eq!(missing_controllers(listed), *missing, "{listed:?}");
    }
}

const CGROUP: &str = "skiff/ns/c1";

#[tokio::test]
async fn v1_usage_and_oom_come_from_the_controller_trees() {
    const FILES: Tree = &[
        ("cpuacct/cpuacct.usage", "9\n"),
        ("memory/memory.max_usage_in_bytes", "9\n"),
        ("pids/cgroup.procs", ""),
        ("cpuacct/skiff/ns/c1/cpuacct.usage", "123456789\n"),
        ("memory/skiff/ns/c1/memory.max_usage_in_bytes", "4096\n"),
        (
            "memory/skiff/ns/c1/memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        ),
        ("cpuacct/skiff/ns/c2/cpuacct.usage", "5\n"),
    ];
    let root = tree(FILES, &[]);
    let layout = CgroupLayout::detect(root.path()).unwrap();
    let usage = |cpu_usage_ns, peak_memory_bytes| CgroupUsage {
        cpu_usage_ns,
        peak_memory_bytes,
    };
    assert_eq!(
        layout.usage(Path::new(CGROUP)).await,
        Some(usage(123_456_789, 4096))
    );
    // No memory cgroup: CPU time still counts.
    assert_eq!(
        layout.usage(Path::new("skiff/ns/c2")).await,
        Some(usage(5, 0))
    );
    assert_eq!(layout.usage(Path::new("skiff/ns/gone")).await, None);
    assert!(layout.oom_killed(Path::new(CGROUP)).await.unwrap());
    assert!(layout.oom_killed(Path::new("skiff/ns/c2")).await.is_err());
}

#[tokio::test]
async fn v2_usage_and_oom_come_from_the_unified_tree() {
    const FILES: Tree = &[
        ("cgroup.controllers", "cpu io memory pids\n"),
        (
            "skiff/ns/c1/cpu.stat",
            "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
        ),
        ("skiff/ns/c1/memory.peak", "8192\n"),
        ("skiff/ns/c1/memory.current", "2048\n"),
        (
            "skiff/ns/c1/memory.events",
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        ),
        // A kernel before 5.19: no memory.peak.
        ("skiff/ns/c2/cpu.stat", "usage_usec 7\n"),
        ("skiff/ns/c2/memory.current", "2048\n"),
        (
            "skiff/ns/c2/memory.events",
            "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
        ),
        ("skiff/ns/c3/memory.current", "2048\n"),
    ];
    let root = tree(FILES, &[]);
    let layout = CgroupLayout::detect(root.path()).unwrap();
    let usage = |cpu_usage_ns, peak_memory_bytes| CgroupUsage {
        cpu_usage_ns,
        peak_memory_bytes,
    };
    assert_eq!(
        layout.usage(Path::new(CGROUP)).await,
        Some(usage(1_500_000, 8192))
    );
    assert_eq!(
        layout.usage(Path::new("skiff/ns/c2")).await,
        Some(usage(7_000, 2048))
    );
    assert_eq!(
        layout.usage(Path::new("skiff/ns/c3")).await,
        None,
        "no cpu.stat"
    );
    assert!(layout.oom_killed(Path::new(CGROUP)).await.unwrap());
    assert!(!layout.oom_killed(Path::new("skiff/ns/c2")).await.unwrap());
    assert!(layout.oom_killed(Path::new("skiff/ns/c3")).await.is_err());
}

#[test]
fn swap_accounting_is_found_in_either_layout() {
    const V1_SWAP: Tree = &[
        ("cpuacct/cpuacct.usage", "1\n"),
        ("memory/memory.max_usage_in_bytes", "1\n"),
        ("pids/cgroup.procs", ""),
        (
            "memory/memory.memsw.limit_in_bytes",
            "9223372036854771712\n",
        ),
    ];
    const V2_SWAP: Tree = &[
        ("cgroup.controllers", "cpu memory pids\n"),
        ("init.scope/cgroup.procs", "1\n"),
        ("system.slice/memory.swap.max", "max\n"),
    ];
    const V2_NO_SWAP: Tree = &[
        ("cgroup.controllers", "cpu memory pids\n"),
        ("system.slice/memory.max", "max\n"),
    ];
    let cases: &[(&str, Tree, bool)] = &[
        ("v1 with memsw", V1_SWAP, true),
        ("v1 without", V1, false),
        ("v2 with memory.swap.max", V2_SWAP, true),
        ("v2 without", V2_NO_SWAP, false),
        ("v2, no child cgroups", V2, false),
    ];
    for (name, files, swap) in cases {
        let root = tree(files, &[]);
        let layout = CgroupLayout::detect(root.path()).unwrap();
        assert_eq!(layout.swap_accounting(), *swap, "{name}");
    }
}

#[tokio::test]
async fn leftovers_are_removed_from_every_hierarchy_unless_in_use() {
    // A file in a directory stands in for a cgroup still holding
    // processes: rmdir refuses both.
    const V1_LEFT: Tree = &[
        ("cpuacct/cpuacct.usage", "1\n"),
        ("memory/memory.max_usage_in_bytes", "1\n"),
        ("pids/cgroup.procs", ""),
        ("pids/skiff/ns/c1/cgroup.procs", "4242\n"),
    ];
    let root = tree(
        V1_LEFT,
        &[
            "cpuacct/skiff/ns/c1",
            "memory/skiff/ns/c1",
            "unified/skiff/ns/c1",
        ],
    );
    let layout = CgroupLayout::detect(root.path()).unwrap();
    let mut removed = layout.remove_leftovers(Path::new(CGROUP)).await;
    removed.sort();
    let expected: Vec<PathBuf> = ["cpuacct", "memory", "unified"]
        .iter()
        .map(|c| root.path().join(c).join(CGROUP))
        .collect();
    assert_eq!(removed, expected);
    assert!(root.path().join("pids").join(CGROUP).is_dir());
    assert!(
        root.path().join("memory/skiff/ns").is_dir(),
        "the parent stays"
    );
    assert_eq!(layout.dirs(Path::new(CGROUP)).len(), 4);

    let root = tree(V2, &["skiff/ns/c1", "skiff/ns/c2/inner"]);
    let layout = CgroupLayout::detect(root.path()).unwrap();
    assert_eq!(
        layout.remove_leftovers(Path::new(CGROUP)).await,
        vec![root.path().join(CGROUP)]
    );
    assert!(layout
        .remove_leftovers(Path::new("skiff/ns/c2"))
        .await
        .is_empty());
    assert!(root.path().join("skiff/ns").is_dir());
}
