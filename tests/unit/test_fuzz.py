"""The random scenario generator and the shrinker (pure; the "kernel" here is a stub)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from typing import Any

import pytest

from daemonstore import mountinfo
from daemonstore.ops import (
    Bind,
    Hold,
    Make,
    Mkdir,
    MountTmpfs,
    Move,
    NewNamespace,
    Op,
    Release,
    Umount,
    UseNamespace,
    canonical_result,
    parse,
    to_text,
)
from daemonstore.sim import fuzz
from daemonstore.sim.files import run_on_model


def generate_text(seed: int, index: int) -> str:
    return to_text(fuzz.generate(seed, index))


def run_fuzz(seed: int, count: int, run_a: fuzz.Runner, run_b: fuzz.Runner,
             **kwargs: Any) -> fuzz.FuzzReport:
    """``fuzz.fuzz`` to completion: its last report."""
    final = fuzz.FuzzReport()
    for running, _ in fuzz.fuzz(seed, count, run_a, run_b, **kwargs):
        final = running
    return final


def op_form(op: Op) -> str:
    """The ``fuzz.WEIGHTS`` key an op belongs to."""
    if isinstance(op, Mkdir):
        return "mkdir"
    if isinstance(op, MountTmpfs):
        return "tmpfs"
    if isinstance(op, Bind):
        return "rbind" if op.recursive else "bind"
    if isinstance(op, Move):
        return "move"
    if isinstance(op, Make):
        return f"make-{'r' if op.recursive else ''}{op.propagation.value}"
    if isinstance(op, Umount):
        return "umount-l" if op.detach else "umount"
    if isinstance(op, NewNamespace):
        return "ns"
    if isinstance(op, UseNamespace):
        return "use"
    if isinstance(op, Hold):
        return "hold"
    if isinstance(op, Release):
        return "release"
    raise TypeError(op)


def test_same_seed_same_text() -> None:
    assert generate_text(5, 17) == generate_text(5, 17)
    assert generate_text(5, 17) != generate_text(6, 17)
    assert generate_text(5, 17) != generate_text(5, 18)


def test_deterministic_across_processes_and_hash_seeds() -> None:
    code = ("from daemonstore.ops import to_text; from daemonstore.sim.fuzz import generate; "
            "print(to_text(generate(42, 3)), end='')")
    outs = []
    for hashseed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hashseed)
        outs.append(subprocess.run([sys.executable, "-c", code], env=env, check=True,
                                   capture_output=True, text=True).stdout)
    assert outs[0] == outs[1] == generate_text(42, 3)


@pytest.mark.parametrize(("lo", "hi"), [(10, 30), (1, 1), (3, 5), (40, 40)])
def test_length_bounds_and_line_numbers(lo: int, hi: int) -> None:
    for i in range(40):
        ops = fuzz.generate(9, i, lo, hi)
        assert lo <= len(ops) <= hi
        assert [op.line for op in ops] == list(range(1, len(ops) + 1))
        assert parse(to_text(ops)) == ops  # every generated line is valid language


def test_bad_length_bounds() -> None:
    with pytest.raises(ValueError):
        fuzz.generate(1, 0, 5, 4)


def test_covers_every_op_form_and_namespace_propagation() -> None:
    forms: Counter[str] = Counter()
    ns_props: set[str] = set()
    for i in range(100):
        for op in fuzz.generate(1, i):
            forms[op_form(op)] += 1
            if isinstance(op, NewNamespace):
                ns_props.add(op.propagation)
    assert set(forms) == set(fuzz.WEIGHTS)
    assert ns_props == {"slave", "private", "shared", "unchanged"}
    assert isinstance(fuzz.generate(1, 0)[0], type(fuzz.generate(2, 0)[0]))  # mkdir first


def test_never_targets_the_sandbox_root() -> None:
    """The two backends root their sandboxes differently: "/" is never umounted, moved or
    mounted on; make-* on "/" and binds of "/" are allowed (and do occur)."""
    made_root = bound_root = False
    for i in range(300):
        for op in fuzz.generate(11, i):
            if isinstance(op, Umount | MountTmpfs):
                assert op.target != "/", op
            if isinstance(op, Move):
                assert "/" not in (op.source, op.target), op
            if isinstance(op, Bind):
                assert op.target != "/", op
                bound_root |= op.source == "/"
            if isinstance(op, Make):
                made_root |= op.target == "/"
            if isinstance(op, UseNamespace):
                assert op.name.startswith("n") or op.name == "init"
    assert made_root and bound_root


def test_shared_and_slave_structures_arise() -> None:
    """The weights are there so that propagation actually happens: most scenarios end with a
    peer group, and a good share with a slave (checked on the model)."""
    with_group = with_master = with_ns = 0
    n = 60
    for i in range(n):
        result = run_on_model(fuzz.generate(2, i))
        canon = canonical_result(result)
        rows = [r for ns in canon["namespaces"].values() for r in ns]  # type: ignore[union-attr]
        with_group += any(r[7] is not None for r in rows)
        with_master += any(r[8] is not None for r in rows)
        with_ns += len(result["namespaces"]) > 1
    assert with_group > n * 0.7
    assert with_master > n * 0.25
    assert with_ns > n * 0.5


# ---- shrinking ------------------------------------------------------------------------------


def _has(ops: list[Op], *lines: str) -> bool:
    text = to_text(ops)
    return all(f"{ln}\n" in text for ln in lines)


def test_shrink_to_the_two_lines_that_matter() -> None:
    ops = fuzz.generate(4, 0, 30, 30)
    keep = (ops[7].to_line(), ops[21].to_line())
    small = fuzz.shrink(ops, lambda cand: _has(cand, *keep))
    assert [op.to_line() for op in small] == list(keep)
    assert [op.line for op in small] == [1, 2]


def test_shrink_drops_mkdir_operands() -> None:
    ops = parse("mkdir /A /B /C\nmount -t tmpfs t /B\numount /A\n")

    def still_fails(cand: list[Op]) -> bool:
        made = {p for op in cand if isinstance(op, Mkdir) for p in op.paths}
        return "/B" in made and any(isinstance(op, MountTmpfs) for op in cand)

    assert still_fails(ops)
    assert to_text(fuzz.shrink(ops, still_fails)) == "mkdir /B\nmount -t tmpfs t /B\n"


def _kernel_ignoring_make_slave(ops: Any) -> dict[str, Any]:
    """A stub backend with a planted bug: it ignores every make-slave."""
    return run_on_model([op for op in ops if "make-slave" not in op.to_line()])


def test_find_divergence_is_shrunk_and_explained() -> None:
    report = run_fuzz(8, 25, run_on_model, _kernel_ignoring_make_slave)
    assert report.scenarios == 25 and report.ops >= 250
    assert report.divergences, "the planted bug must be found"
    for div in report.divergences:
        ops = parse(div.text)
        assert any("make-slave" in op.to_line() for op in ops)
        assert len(ops) < len(parse(div.original))
        assert div.diffs and div.text in div.report()
        assert div.file_text().startswith("# fuzz seed 8 scenario ")
        assert parse(div.file_text()) == ops  # the notes are comments
        # 1-minimal: dropping any single line loses the divergence
        for i in range(len(ops)):
            assert not fuzz.compare(ops[:i] + ops[i + 1:], run_on_model,
                                    _kernel_ignoring_make_slave) or len(ops) == 1


def test_crash_is_a_divergence_of_its_own_kind() -> None:
    def crashing(ops: Any) -> dict[str, Any]:
        if any(isinstance(op, Move) for op in ops):
            raise NotImplementedError("move")
        return run_on_model(ops)

    div = fuzz.find_divergence(0, 0, parse("mkdir /A /B\nmount --move /A /B\numount /B\n"),
                               run_on_model, crashing)
    assert div is not None
    assert div.text == "mount --move /A /B\n"
    assert div.diffs == ("kernel raised NotImplementedError: move",)


def test_no_divergence_when_backends_agree() -> None:
    report = run_fuzz(3, 5, run_on_model, run_on_model, start=100)
    assert report.summary() == f"fuzz: 5 scenarios, {report.ops} ops, 0 divergences"
    assert mountinfo.canonical({}, []) == {"errors": [], "namespaces": {}}


def test_a_backend_that_always_fails_stops_the_run() -> None:
    def broken(ops: Any) -> dict[str, Any]:
        raise PermissionError(1, "Operation not permitted")

    with pytest.raises(fuzz.BackendBroken, match="fails even on the empty scenario"):
        run_fuzz(1, 3, run_on_model, broken)


def test_holds_make_some_umounts_busy() -> None:
    """The generated holds matter: some umounts fail with EBUSY only because of them (the same
    scenario with every hold and release turned into a harmless mkdir succeeds there)."""
    from daemonstore.sim.files import run_on_model

    busy_by_holds = 0
    for i in range(150):
        ops = fuzz.generate(3, i)
        plain = [Mkdir(("/A",), line=op.line) if isinstance(op, (Hold, Release)) else op
                 for op in ops]
        with_holds = {line for line, e in run_on_model(ops)["errors"] if e == "EBUSY"}
        without = {line for line, e in run_on_model(plain)["errors"] if e == "EBUSY"}
        busy_by_holds += len(with_holds - without)
    assert busy_by_holds >= 5
