"""The propagation picture (daemonstore.report.graph) for a fixed set of mountinfo texts: relabelled
groups, peers, slaves, shared+slave chains, private mounts, hidden mounts; text and DOT."""

from __future__ import annotations

from daemonstore.report import graph

ROOT = "1 0 0:40 / / rw - tmpfs sandbox rw"
INIT = "\n".join([
    ROOT,
    "3 1 0:40 /run/daemon-store/d /run/daemon-store/d rw shared:17 - tmpfs sandbox rw",
    "4 3 0:40 /v/H/root/d /run/daemon-store/d/H rw shared:23 - tmpfs sandbox rw",
    "5 1 0:40 /v/H /v/H rw - tmpfs sandbox rw",
])
# a jailed daemon: hidden copies below a tmpfs on /run, reachable copies on top of it
DAEMON = "\n".join([
    "9 8 0:40 / / rw - tmpfs sandbox rw",
    "10 9 0:40 /run/daemon-store/d /run/daemon-store/d rw master:17 - tmpfs sandbox rw",
    "11 9 0:41 / /run rw - tmpfs tmpfs rw",
    "12 11 0:40 /run/daemon-store/d /run/daemon-store/d rw master:17 - tmpfs sandbox rw",
    "13 12 0:40 /v/H/root/d /run/daemon-store/d/H rw master:23 - tmpfs sandbox rw",
    "14 10 0:40 /v/H/root/d /run/daemon-store/d/H rw master:23 - tmpfs sandbox rw",
])
# a namespace cloned from the daemon and made shared again: shared+slave of G1
CHAIN = "\n".join([
    "20 19 0:40 / / rw - tmpfs sandbox rw",
    "21 20 0:40 /run/daemon-store/d /run/daemon-store/d rw shared:31 master:17 - tmpfs sandbox rw",
    "22 20 0:40 /run/daemon-store/d /x rw master:31 - tmpfs sandbox rw",
])
PRIVATE = "\n".join([
    "30 29 0:40 / / rw - tmpfs sandbox rw",
    "31 30 0:40 /run/daemon-store/d /run/daemon-store/d rw - tmpfs sandbox rw",
])
NAMESPACES = {"init": INIT, "daemon-d": DAEMON, "chain": CHAIN, "bad": PRIVATE}


def test_groups_are_relabelled_in_order_of_first_appearance() -> None:
    assert graph.group_labels(NAMESPACES) == {17: "G1", 23: "G2", 31: "G3"}


def test_picture_sorts_mounts_into_peers_slaves_and_private() -> None:
    pic = graph.build_picture(NAMESPACES)
    assert [n.label() for n in pic.peers["G1"]] == ["init:/run/daemon-store/d"]
    assert [n.label() for n in pic.slaves["G1"]] == ["daemon-d:/run/daemon-store/d"]
    assert [n.label() for n in pic.slaves["G2"]] == ["daemon-d:/run/daemon-store/d/H"]
    assert pic.master_of == {"G3": "G1"}
    assert pic.roots() == ["G1", "G2"]
    assert [n.label() for n in pic.private] == ["init:/", "init:/v/H", "daemon-d:/",
                                                "daemon-d:/run", "chain:/", "bad:/",
                                                "bad:/run/daemon-store/d"]
    assert pic.hidden == 2  # mounts 10 and 14, under the tmpfs on /run


def test_text_tree() -> None:
    pic = graph.build_picture(NAMESPACES, prefixes=["/run/daemon-store", "/x"])
    assert graph.render_text(pic, {"H": "alice"}).splitlines()[2:] == [
        "G1 peers: init:/run/daemon-store/d",
        "  |-> slave daemon-d:/run/daemon-store/d",
        "  `-> slave group G3 (shared+slave) peers: chain:/run/daemon-store/d",
        "        `-> slave chain:/x",
        "G2 peers: init:/run/daemon-store/d/<alice>",
        "  `-> slave daemon-d:/run/daemon-store/d/<alice>",
        "private (receive nothing, send nothing):",
        "  bad:/run/daemon-store/d",
        "(2 mounts hidden under a covering mount are not shown: they still receive, but no "
        "path reaches them)",
    ]


def test_prefixes_filter_mount_points_not_labels() -> None:
    pic = graph.build_picture({"init": INIT}, prefixes=["/run/daemon-store/d/H"])
    assert list(pic.peers) == ["G2"]  # still G2: labels come from every mount


def test_hidden_mounts_can_be_shown() -> None:
    pic = graph.build_picture({"daemon-d": DAEMON}, visible_only=False)
    assert pic.hidden == 0
    assert len(pic.slaves["G1"]) == 2


def test_dot() -> None:
    pic = graph.build_picture(NAMESPACES, prefixes=["/run/daemon-store", "/x"])
    dot = graph.render_dot(pic, {"H": "alice"})
    assert dot.startswith("digraph propagation {\n") and dot.endswith("}\n")
    lines = dot.splitlines()
    assert '  subgraph "cluster_0" {' in lines
    assert '    label="namespace init";' in lines
    assert '    "init:4" [label="/run/daemon-store/d/<alice>\\nshared"];' in lines
    assert '  "G1" -> "init:3" [dir=none, penwidth=2, label="peer"];' in lines
    assert '  "G1" -> "daemon-d:12" [style=dashed, label="slave"];' in lines
    assert '  "G1" -> "G3" [style=dashed, label="slave group"];' in lines
    assert '  "G3" -> "chain:22" [style=dashed, label="slave"];' in lines
    assert '    "bad:31" [label="/run/daemon-store/d\\nprivate"];' in lines
    assert lines.count("  }") == 4  # one cluster per namespace with mounts in view


def test_dot_quotes_awkward_names() -> None:
    text = '1 0 0:40 / / rw shared:1 - tmpfs sandbox rw'
    dot = graph.render_dot(graph.build_picture({'ns "x"\\y': text}))
    assert '"ns \\"x\\"\\\\y:1"' in dot


def test_empty() -> None:
    assert graph.render_text(graph.build_picture({})).endswith("(no mounts in view)")
