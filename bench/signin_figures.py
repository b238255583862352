"""The figures of the sign-in benchmark (bench helper of :mod:`bench.signin`; pure): the rounds
of each size summarized (best of, same-round pairs), scaling fitted over the sizes, and the
targets judged. The module docstring of :mod:`bench.signin` says what each figure measures.
"""

from __future__ import annotations

import os
from typing import Any

from bench import fits

TARGETS = {"ratio_floor": 1.5, "speedup_shell": 20.0, "ratio_dbus": 3.0, "exponent": 1.15}
STORES, NAMESPACES = (16, 32, 64, 128), (25, 50, 100, 200)
TARGET_SIZE = (64, 100)


def best(rows: list[dict[str, float]], key: str) -> float | None:
    values = [row[key] for row in rows if key in row]
    return round(min(values), 3) if values else None


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    ours, fl, sh, db = raw["ours"], raw["floor"], raw["shell"], raw.get("dbus", [])
    # ours and the floor of the same round ran back to back: the ratio of such a pair shares
    # the machine's load of that moment, and its median resists the rounds a spike hit
    paired = sorted(o["apply"] / f["apply"] for o, f in zip(ours, fl, strict=False))
    return {
        "ratio_floor_paired": round(paired[len(paired) // 2], 3) if paired else None,
        "binds": raw["binds"], "steps": raw["steps"],
        "apply_ms": best(ours, "apply"), "plan_ms": best(ours, "plan"),
        "apply_cpu_ms": best(ours, "apply_cpu"), "floor_cpu_ms": best(fl, "apply_cpu"),
        "signin_ms": round(min(r["plan"] + r["apply"] for r in ours), 3),
        "floor_ms": best(fl, "apply"), "floor_plan_ms": best(fl, "plan"),
        "shell_ms": best(sh, "apply"),
        "signout_ms": round(min(r["out_plan"] + r["out_apply"] for r in ours), 3),
        "signout_apply_ms": best(ours, "out_apply"), "signout_floor_ms": best(fl, "out_apply"),
        "signout_shell_ms": best(sh, "out_apply"),
        "dbus_e2e_ms": best(db, "e2e"), "dbus_ready_ms": best(db, "ready"),
        "dbus_signout_ms": best(db, "signout"),
    }


def ratio(a: float | None, b: float | None, digits: int = 3) -> float | None:
    return round(a / b, digits) if a is not None and b else None


def print_row(stores: int, namespaces: int, row: dict[str, Any]) -> None:
    dbus = f"  dbus e2e {row['dbus_e2e_ms']:7.2f}" if row["dbus_e2e_ms"] else ""
    print(f"S={stores:3d} N={namespaces:3d}  apply {row['apply_ms']:7.2f} ms  floor "
          f"{row['floor_ms']:7.2f} ({row['apply_ms'] / row['floor_ms']:4.2f}x; CPU "
          f"{row['apply_cpu_ms'] / row['floor_cpu_ms']:4.2f}x; paired "
          f"{row['ratio_floor_paired']:4.2f}x)  plan "
          f"{row['plan_ms']:6.2f}  shell {row['shell_ms']:8.1f} "
          f"({row['shell_ms'] / row['apply_ms']:5.1f}x slower){dbus}  sign-out "
          f"{row['signout_ms']:6.2f} (floor {row['signout_floor_ms']:.2f})", flush=True)


def scaling(rows: dict[tuple[int, int], dict[str, Any]], sizes: tuple[int, ...],
            axis: int) -> dict[str, Any]:
    keys = [(s, TARGET_SIZE[1]) if axis == 0 else (TARGET_SIZE[0], s) for s in sizes]
    out: dict[str, Any] = {"sizes": list(sizes)}
    for fig in ("apply_ms", "floor_ms", "plan_ms", "shell_ms", "dbus_e2e_ms", "signout_ms",
                "signout_floor_ms", "apply_cpu_ms", "floor_cpu_ms"):
        out[fig] = [rows[k][fig] for k in keys]
    apply, bare = out["apply_ms"], out["floor_ms"]
    out["doubling"], out["floor_doubling"] = fits.doublings(apply), fits.doublings(bare)
    xs = list(sizes)
    out["exponent"] = round(fits.exponent(xs, apply), 3)
    out["floor_exponent"] = round(fits.exponent(xs, bare), 3)
    if all(out["dbus_e2e_ms"]):
        out["dbus_exponent"] = round(fits.exponent(xs, out["dbus_e2e_ms"]), 3)
    out["paired_ratio"] = [rows[k]["ratio_floor_paired"] for k in keys]
    # what our code adds, per plan step: constant if our own cost is linear in the work
    out["overhead_per_step_us"] = [round((a - f) * 1000 / rows[k]["steps"], 2)
                                   for a, f, k in zip(apply, bare, keys, strict=True)]
    # the same from the same-round pairs: floor x (median pair ratio - 1), robust to spikes
    out["overhead_per_step_paired_us"] = [
        round(rows[k]["floor_ms"] * (rows[k]["ratio_floor_paired"] - 1) * 1000
              / rows[k]["steps"], 2) for k in keys]
    slope, r2 = fits.linear_fit(xs, apply)
    out["slope_us"], out["r2"] = round(slope * 1000, 2), round(r2, 4)
    return out


def figures(rows: dict[tuple[int, int], dict[str, Any]], quick: bool) -> dict[str, Any]:
    t = rows[TARGET_SIZE]
    fig: dict[str, Any] = {"stores": TARGET_SIZE[0], "namespaces": TARGET_SIZE[1], **t}
    fig.update({
        "ratio_floor": ratio(t["apply_ms"], t["floor_ms"]),
        "ratio_floor_cpu": ratio(t["apply_cpu_ms"], t["floor_cpu_ms"]),
        "ratio_plan_floor": ratio(t["plan_ms"], t["floor_plan_ms"]),
        "ratio_signout_floor": ratio(t["signout_apply_ms"], t["signout_floor_ms"]),
        "speedup_shell": ratio(t["shell_ms"], t["apply_ms"], 1),
        "ratio_dbus": ratio(t["dbus_e2e_ms"], t["apply_ms"]),
        "per_store_us": round(t["apply_ms"] * 1000 / TARGET_SIZE[0], 2),
    })
    if not quick:
        fig["scaling_stores"] = scaling(rows, STORES, 0)
        fig["scaling_namespaces"] = scaling(rows, NAMESPACES, 1)
        fig["slope_store_us"] = fig["scaling_stores"]["slope_us"]
        fig["slope_namespace_us"] = fig["scaling_namespaces"]["slope_us"]
    fig["targets"] = TARGETS
    fig["met"] = judge(fig, quick)
    fig["kernel"] = os.uname().release
    return fig


def judge(fig: dict[str, Any], quick: bool) -> dict[str, bool]:
    """Each target of :data:`TARGETS`, judged on the figures (``linear`` only over all sizes)."""
    # judged on the same-round pairs: the kernel's own time for the very same syscalls swings
    # between rounds on a shared machine (two modes, ~25 and ~40 ms at S=64 N=100, for the
    # floor as for ours), so one lucky round can decide a ratio of two bests either way
    met = {"ratio_floor": fig["ratio_floor_paired"] <= TARGETS["ratio_floor"],
           "speedup_shell": fig["speedup_shell"] >= TARGETS["speedup_shell"]}
    if fig["ratio_dbus"] is not None:
        met["ratio_dbus"] = fig["ratio_dbus"] < TARGETS["ratio_dbus"]
    if not quick:
        ss, sn = fig["scaling_stores"], fig["scaling_namespaces"]
        # judged over the whole 8x range (fitted exponent), not on single doublings: on this
        # shared machine one doubling of the kernel's own floor swings from 1.8x to 2.7x. The
        # kernel's time per mount grows with the mounts in the system (its floor's exponent is
        # above 1 in most runs), and apply cannot be more linear than the syscalls it makes:
        # apply is linear when its exponent is at most 1.15 or at most the floor's
        met["linear"] = all(sc["exponent"] <= max(TARGETS["exponent"], sc["floor_exponent"])
                            for sc in (ss, sn))
        met["kernel_linear"] = max(ss["floor_exponent"],
                                   sn["floor_exponent"]) <= TARGETS["exponent"]
        # What our code adds per plan step is reported (overhead_per_step_*), not judged: it is
        # the difference of two timings whose kernel part swings by up to 1.6x between rounds,
        # so it moved between -0.5 and 8 us across sizes in one run. Our own work is judged
        # exactly instead, by instruction and Host-call counts (bench/instructions.py).
    return met
