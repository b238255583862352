"""The audit corpus (tests/audit_corpus/): the exact findings of every file.

The good configs are *modelled on* the sandboxing guide's examples (permission_broker, mtpd) and
on platform2 jobs (biod, u2fd); they were written for this corpus, not copied. Every bad config
carries one mistake, named by its file; ``store-no-new-mount-ns.conf`` binds two stores, so that
rule fires twice there.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from daemonstore.audit import audit_paths, exit_code
from daemonstore.audit.rules import RULES

CORPUS = Path(__file__).resolve().parents[1] / "audit_corpus"
GOOD = sorted((CORPUS / "good").glob("*.conf"))
BAD = sorted((CORPUS / "bad").glob("*.conf"))

#: bad file -> the exact rule ids it must produce, in report order
EXPECTED_BAD: dict[str, list[str]] = {
    "caps-near-root": ["caps-near-root"],
    "caps-root-equivalent": ["caps-root-equivalent"],
    "chronos-access-group": ["chronos-access-group"],
    "config-unresolved": ["config-unresolved"],
    "forbidden-intersection": ["forbidden-intersection"],
    "minijail-refuses": ["minijail-refuses"],
    "no-minijail": ["no-minijail"],
    "no-new-privs": ["no-new-privs"],
    "run-not-tmpfs": ["run-not-tmpfs"],
    "store-bind-not-recursive": ["store-bind-not-recursive"],
    "store-bind-too-broad": ["store-bind-too-broad"],
    "store-bind-with-b": ["store-bind-with-b"],
    "store-cache-missing": ["store-cache-missing"],
    "store-no-new-mount-ns": ["store-no-new-mount-ns", "store-no-new-mount-ns"],
    "store-propagation-private": ["store-propagation-private"],
    "store-propagation-private-profile": ["store-propagation-private"],
    "store-propagation-shared": ["store-propagation-shared"],
    "unknown-option": ["unknown-option"],
    "unresolved-variable": ["unresolved-variable"],
}


#: inputs audited together (an upstart job and the minijail config file it names)
COMPANIONS = {"u2fd-job.conf": CORPUS / "good" / "u2fd.conf"}


def ids(path: Path) -> list[str]:
    extra = [str(COMPANIONS[path.name])] if path.name in COMPANIONS else []
    report = audit_paths([str(path), *extra])[0]
    assert report.error is None, report.error
    return [f.rule_id for f in report.findings]


def test_the_corpus_is_complete() -> None:
    assert {p.stem for p in BAD} == set(EXPECTED_BAD)
    assert {p.name for p in GOOD} == {"permission_broker.conf", "mtpd.conf", "biod.conf",
                                      "u2fd.conf", "u2fd-job.conf"}
    fired = {rule for expected in EXPECTED_BAD.values() for rule in expected}
    assert fired == {r.id for r in RULES}, "every rule needs a bad example"


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.name)
def test_good_configs_are_clean(path: Path) -> None:
    assert ids(path) == []


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_each_bad_config_fires_exactly_its_rule(path: Path) -> None:
    assert ids(path) == EXPECTED_BAD[path.stem]


def test_the_whole_good_directory_together_is_clean() -> None:
    reports = audit_paths([str(CORPUS / "good")])
    assert [f for r in reports for f in r.findings] == []
    assert exit_code(reports) == 0
    config = next(r for r in reports if r.path.endswith("/u2fd.conf"))
    assert config.note is not None and "u2fd-job.conf" in config.note


def test_findings_point_at_the_offending_line() -> None:
    (report,) = audit_paths([str(CORPUS / "bad" / "store-bind-not-recursive.conf")])
    (finding,) = report.findings
    text = (CORPUS / "bad" / "store-bind-not-recursive.conf").read_text().splitlines()
    assert "MS_BIND'" in text[finding.line - 1] and finding.severity == "error"
    assert finding.arg == "-k /run/daemon-store/foo,/run/daemon-store/foo,none,MS_BIND"
    assert "sandboxing.md: 'Securely mounting cryptohome daemon store folders'" in finding.why


def test_every_finding_cites_its_source() -> None:
    for path in BAD:
        (report,) = audit_paths([str(path)])
        for f in report.findings:
            rule = next(r for r in RULES if r.id == f.rule_id)
            assert f.why.endswith(f"({rule.cite})") and f.severity == rule.severity
