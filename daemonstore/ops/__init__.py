"""The plan vocabulary (plan layer, tier 2): one :class:`Op` hierarchy for every step a
component plans and a dry run prints (docs/architecture.md §3: the plan as data, then apply).

Modules:

* :mod:`~daemonstore.ops.base`: the :class:`Op` base, :func:`to_text`, :func:`flatten` (a
  composite op's parts), :func:`quote`, and :func:`undo_of` / :func:`op_path` for appliers
  that roll back and report;
* :mod:`~daemonstore.ops.scenario`: the scenario language (the contract): its ten ops, the
  parser and :func:`run_scenario`;
* :mod:`~daemonstore.ops.files`: directories and their contents (MakeDir, EnsureDir, Chmod,
  Chown, RemoveDir, RenewDir, RemoveTree) and the one safe tree walker, :func:`walk_tree`;
* :mod:`~daemonstore.ops.guard`: the root-owned guard that keeps a mount point in a
  user-writable directory from being removed by that user (GuardMountPoint);
* :mod:`~daemonstore.ops.mounts`: mounts and namespaces beyond the language (SafeBind,
  MakeStore -- startup's four steps for a store as one op --, BindDir, RemountBind,
  ForceUmount, and the jail's Unshare, EnterNamespaceFile, PinTree, AttachTree).

Whether an op resolves its paths without following symlinks (``safe``) is a property of each
op, stated in the table of its module.
"""

from daemonstore.ops.base import Op, flatten, op_path, quote, to_text, undo_of
from daemonstore.ops.files import (
    Chmod,
    Chown,
    DirChmod,
    DirChown,
    EnsureDir,
    MakeDir,
    MakeTarget,
    RemoveDir,
    RemoveTree,
    RenewDir,
    TreeItem,
    TreeReader,
    expect_dir,
    walk_tree,
)
from daemonstore.ops.guard import GuardMountPoint
from daemonstore.ops.mounts import (
    AttachTree,
    BindDir,
    DetachedTrees,
    EnterNamespaceFile,
    ForceUmount,
    MakeStore,
    PinTree,
    RemountBind,
    SafeBind,
    SafeMake,
    Unshare,
)
from daemonstore.ops.scenario import (
    Bind,
    Hold,
    Make,
    Mkdir,
    MountTmpfs,
    Move,
    NewNamespace,
    Release,
    ScenarioSyntaxError,
    Umount,
    UseNamespace,
    canonical_result,
    parse,
    parse_line,
    run_scenario,
)

__all__ = [
    "AttachTree",
    "Bind",
    "BindDir",
    "Chmod",
    "Chown",
    "DetachedTrees",
    "DirChmod",
    "DirChown",
    "EnsureDir",
    "EnterNamespaceFile",
    "ForceUmount",
    "GuardMountPoint",
    "Hold",
    "MakeDir",
    "MakeStore",
    "MakeTarget",
    "Make",
    "Mkdir",
    "MountTmpfs",
    "Move",
    "NewNamespace",
    "Op",
    "PinTree",
    "Release",
    "RemountBind",
    "RemoveDir",
    "RemoveTree",
    "RenewDir",
    "SafeBind",
    "SafeMake",
    "ScenarioSyntaxError",
    "TreeItem",
    "TreeReader",
    "Umount",
    "Unshare",
    "UseNamespace",
    "canonical_result",
    "expect_dir",
    "flatten",
    "op_path",
    "parse",
    "parse_line",
    "quote",
    "run_scenario",
    "to_text",
    "undo_of",
    "walk_tree",
]
