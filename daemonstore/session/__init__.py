"""Sign-in and sign-out, the cryptohome side (tier 3, plan layer): plan (pure inspection of a
Host) then apply (the steps of :mod:`daemonstore.ops`, on the Host given). Written once against
:class:`~daemonstore.host.Host`: it runs on the pure model and, inside ``run_in_sandbox``, on
the real kernel.

Public API (cryptohome_sim and ``daemonstore.world`` call it; keep the names)::

    plan_sign_in(host, user_hash, *, first_user=None, vault="dir") -> SignInPlan   pure
    sign_in(host, user_hash, *, first_user=None, fail_at=None, vault="dir") -> SessionResult
        raises SignInError(reason, path, errno) after rolling back
    plan_sign_out(host, user_hash, *, kill_holders=False, remove_store_targets=False)
        -> SignOutPlan                                                   pure, no changes
    sign_out(host, user_hash, *, kill_holders=False, remove_store_targets=False)
        -> SignOutResult                  best effort, no raise; the empty store targets stay
    mounted_users(host) -> list[str]                                     hashes, from mountinfo

    SignInPlan.steps (tuple of Op), .warnings, .stores, .first_user, .to_lines(), .apply(host,
        *, fail_at=None)
    SessionResult.mounted (mount points, in order), .warnings, .stores, .first_user
    SignOutPlan.steps, .warnings, .signed_in, .to_lines(), .apply(host)
    SignOutResult.unmounted (plain umounts), .lazily_detached (EBUSY, then MNT_DETACH; not
        repeated in .unmounted), .removed_dirs, .failed, .warnings, .holders (who kept the
        user's mounts busy: session/holders.py), .ended (holders ended: kill_holders)

``first_user=None`` decides from mountinfo: the first user is the one who finds
``/home/chronos/user`` not mounted. ``fail_at=N`` raises an injected ``OSError(EIO)`` before step
N (0-based index into ``plan.steps``; a value past the end injects nothing), so tests and
cryptohome_sim's control interface can fail sign-in at every step and watch the rollback.

The rules, where they differ from the original (docs/chromeos.md §2, §7):

* a store that is not mounted (template installed without a reboot) is skipped with a warning
  instead of failing the whole sign-in (§7 item 12);
* the vault is user-controlled: everything in it is inspected with ``lstat`` and every step
  uses ``safe=True``, so a symlink, file or fifo where a directory should be refuses that user's
  sign-in, naming the path, at plan time or, if planted meanwhile, at the step that meets it
  (ELOOP / ENOTDIR), followed by the rollback;
* a failure part-way unmounts what this sign-in mounted (LIFO) and removes the directories it
  created outside ``/home/.shadow`` (the original leaves the latter, §2.3 step 5);
* sign-out removes the empty per-user targets (§7 item 1) and the mount points that outlive a
  user in the original, so a daemon namespace made mid-session keeps no copy of the vault.

``vault="loop"`` (kernel only, :mod:`~daemonstore.session.loop_vault`) backs the vault with an
ext4 image on a loop device; a user's two vault kinds are separate storage. On the model it is
refused at plan time (EOPNOTSUPP): the model has no block devices.

Modules: :mod:`.plan` (the sign-in planner), :mod:`.apply` (SignInPlan, apply and rollback),
:mod:`.sign_out`, :mod:`.queries` (who is signed in, whose mounts), :mod:`.results`;
:mod:`.guest` (mnt_chrome and the ephemeral vault), :mod:`.repair` (crash convergence),
:mod:`.activity` (last-activity records), :mod:`.loop_vault` (the loop vault's steps).
"""

from daemonstore.session.apply import SignInPlan
from daemonstore.session.plan import BIND_FLAGS, VAULTS, plan_sign_in, sign_in
from daemonstore.session.queries import mounted_users
from daemonstore.session.results import SessionResult, SignInError, SignOutResult
from daemonstore.session.sign_out import SignOutPlan, plan_sign_out, sign_out

__all__ = [
    "BIND_FLAGS",
    "VAULTS",
    "SessionResult",
    "SignInError",
    "SignInPlan",
    "SignOutPlan",
    "SignOutResult",
    "mounted_users",
    "plan_sign_in",
    "plan_sign_out",
    "sign_in",
    "sign_out",
]
