"""The ``veilcam`` command line.

The commands and flags of the MVP contract (init, user add, store, camera, view, verify,
demo) are what scripts depend on: add new ones, never rename these. Every user mistake ends in
one line ``veilcam: error: ...`` and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from veilcam.common.errors import VeilcamError

if TYPE_CHECKING:
    from veilcam.common.home import Home

log = logging.getLogger("veilcam")

EXIT_USAGE = 2


def _read_password(
    args: argparse.Namespace, prompt: str = "Password: ", confirm: bool = False
) -> str:
    """One password: without echo on a terminal (twice with ``confirm``), else one line of
    standard input without its line ending (common.passwordinput)."""
    from veilcam.common.passwordinput import read_password

    return read_password(args.password_stdin, prompt=prompt, confirm=confirm)


# argparse types: a bad value is refused up front with what is wrong (exit 2, no traceback)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < 1e9:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, not {text}")
    return value


def _port_in(low: int, high: int):
    def port(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low}..{high}, not {value}")
        return value

    return port


_port = _port_in(1, 65535)
_port_or_off = _port_in(0, 65535)
_port_base = _port_in(1, 65533)  # three consecutive ports


def _ready_writer(path: str | None) -> Callable[[dict[str, str]], None] | None:
    """The node's ``on_ready`` for ``--ready-file PATH``: once the node is bound and serving,
    PATH holds one JSON object, its pid and endpoints, written atomically (a reader sees the
    whole file or none). Scripts and the test harness wait for it instead of reading logs."""
    if not path:
        return None
    target = Path(path)

    def write(info: dict[str, str]) -> None:
        from veilcam.common.secretfiles import write_atomic

        doc = {"pid": os.getpid(), **info}
        write_atomic(target, (json.dumps(doc, sort_keys=True) + "\n").encode())

    return write


def _port_options(parser: argparse.ArgumentParser) -> None:
    """--port-base and --web-port, shared by init and demo."""
    parser.add_argument(
        "--port-base",
        type=_port_base,
        default=7700,
        help="store ports: ingest, relay, query = base, base+1, base+2 (default: 7700)",
    )
    parser.add_argument(
        "--web-port",
        type=_port,
        default=7780,
        help="port of the browser viewer page on 127.0.0.1 (default: 7780)",
    )


def _node_run_options(parser: argparse.ArgumentParser) -> None:
    """--stats-out and --metrics-port, shared by the store and camera commands."""
    parser.add_argument(
        "--stats-out",
        type=_output_file,
        help="at exit, write counters and per-stage timings (JSON)",
    )
    parser.add_argument(
        "--metrics-port",
        type=_port_or_off,
        metavar="PORT",
        help="serve Prometheus metrics on this port (overrides [metrics] port; 0: off)",
    )


def _output_file(text: str) -> str:
    folder = Path(text).expanduser().absolute().parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise argparse.ArgumentTypeError(
            f"cannot create the folder {folder}: {exc.strerror or exc}"
        ) from None
    return text


# --------------------------------------------------------------------------- commands


def cmd_init(args: argparse.Namespace) -> int:
    from veilcam.common.provision import init_home
    from veilcam.sample_videos import DEMO_CLIP

    source = args.source if args.source is not None else str(DEMO_CLIP)
    home = init_home(
        Path(args.home), args.camera_id, source, args.port_base, args.web_port, args.loop
    )
    from veilcam.common.urls import redact_url

    shown = redact_url(source)  # an IP camera's password stays out of terminals and logs
    print(f"created veilcam home {home.root} (camera {args.camera_id}, source {shown})")
    print(f"next: veilcam user add NAME --home {home.root} --password-stdin")
    return 0


def cmd_user_add(args: argparse.Namespace) -> int:
    from veilcam.admin import add_user
    from veilcam.common.home import open_home

    home = open_home(args.home)
    password = _read_password(args, f"New password for {args.name}: ", confirm=True)
    path = add_user(home, args.name, password)
    print(f"created user {args.name} (keystore {path}), granted every camera of {home.root}")
    return 0


def cmd_user_passwd(args: argparse.Namespace) -> int:
    """Re-seal the user's keystore under a new password and change the store's account with
    it: both, or neither (a store account left on the old password keeps opening for it).
    The account is changed in this home's accounts database when the home holds the
    store's, else through the store's PASSWD query; ``--local-only`` re-seals the keystore
    here and leaves the store alone."""
    from veilcam.admin import reseal_keystore
    from veilcam.common.home import check_user_name, open_home
    from veilcam.common.keystore import parse_keystore

    home = open_home(args.home)
    name = check_user_name(args.name)
    path = home.keystore_path(name)
    where = _passwd_target(home, args.local_only)
    if not path.exists() and where in ("", "local"):
        raise VeilcamError(
            f"no keystore of user {name!r} in {home.root} ({path})"
            + ("" if where else ", and no store to change the password on (no viewer.toml)")
        )
    old = _read_password(args, f"Current password of {name}: ")
    new = _read_password(args, f"New password for {name}: ", confirm=True)
    if path.exists():
        doc = parse_keystore(path.read_text("utf-8"), f"keystore {path}")
    else:
        doc = _store_keystore(home, name, old, where)
    new_doc = reseal_keystore(doc, old, new)  # checks the old password and the new one's
    if where in ("database", "store"):
        _change_store_password(home, name, old, new, doc, new_doc, where)
    if path.exists():
        from veilcam.common.secretfiles import write_secret

        write_secret(path, (json.dumps(new_doc, indent=2) + "\n").encode("utf-8"))
        print(
            f"re-sealed {path} under the new password (same keys: grants and archived "
            "footage stay open to the user)"
        )
    if where in ("local", ""):
        why = "--local-only" if where else "this home has no viewer.toml to reach it with"
        print(
            f"note: the store's account of {name} still opens with the OLD password ({why}): "
            "log-ins through the store keep using it, and log-ins from this home refuse the "
            "store's copy now (its salt differs from the keystore here); use the keystore "
            "offline (--keystore) or change the password where the store is reachable",
            file=sys.stderr,
        )
    return 0


def _passwd_target(home, local_only: bool) -> str:
    """Where ``user passwd`` changes the store's account: "database" (this home holds the
    store's accounts), "store" (through the PASSWD query, as this home's viewer), "local"
    (--local-only) or "" (nowhere to)."""
    if local_only:
        return "local"
    if home.accounts_path.exists():
        return "database"
    if home.viewer_config_path.exists():
        return "store"
    return ""


def _store_keystore(home, name: str, password: str, where: str) -> dict:
    """The user's keystore from the store's accounts (no local copy in this home)."""
    if where == "database":
        from veilcam.store_node.accounts import AccountStore

        doc = AccountStore.keystore_in(home, name)
        if doc is None:
            raise VeilcamError(f"no user {name!r} in the accounts of {home.root}")
        return doc
    from veilcam.viewer.login import fetch_keystore

    return fetch_keystore(home, name, password).doc


def _change_store_password(
    home, name: str, old: str, new: str, doc: dict, new_doc: dict, where: str
) -> None:
    """The store's half of ``user passwd``; nothing is changed here if it fails."""
    from veilcam.common import deployment
    from veilcam.common.keystore import derive_secrets, keystore_kdf
    from veilcam.viewer.login import change_password_on_store, remember_kdf

    unchanged = (
        "nothing was changed (the keystore here and the store's account change together); "
        "with --local-only only the keystore here is re-sealed"
    )
    if where == "database":
        from veilcam.store_node.accounts import AccountStore

        with AccountStore.open_in(home) as accounts:
            changed = accounts.change_password(
                name,
                derive_secrets(old, keystore_kdf(doc)).login_secret,
                derive_secrets(new, keystore_kdf(new_doc)).login_secret,
                json.dumps(new_doc),
            )
        if not changed:
            raise VeilcamError(
                f"the store's account of {name!r} ({home.accounts_path}) does not open with "
                f"the current password (no such account, or one sealed under another "
                f"password): {unchanged}"
            )
        remember_kdf(home, name, keystore_kdf(new_doc))
        print(f"changed the store's account of {name} in {home.accounts_path}")
        return
    from veilcam.common.errors import KeystoreError

    endpoint = deployment.viewer_config(home).viewer.query
    try:
        change_password_on_store(home, name, old, new, new_doc)
    except KeystoreError as exc:
        raise VeilcamError(f"{exc}: {unchanged}") from None
    except VeilcamError as exc:
        raise VeilcamError(
            f"the store at {endpoint} could not be reached ({exc}): {unchanged}; run "
            "again when the store is up"
        ) from None
    print(f"changed the store's account of {name} (store at {endpoint})")
    print(
        f"note: other homes holding a copy of {name}'s keystore.json (an admin home, another "
        "viewer machine) must get the new one, and homes where the user logged in through "
        f"the store without a keystore pinned the old salt: remove the {name!r} entry from "
        "their state/login-kdf.json; log-ins there refuse the new salt until then",
        file=sys.stderr,
    )


def cmd_register(args: argparse.Namespace) -> int:
    from veilcam.common.home import open_home
    from veilcam.common.passwordinput import check_password_strength
    from veilcam.viewer.login import register

    home = open_home(args.home)
    password = _read_password(args, f"New password for {args.name}: ", confirm=True)
    check_password_strength(password, args.name)  # as 'user add': WeakPasswordError says why
    ks = register(home, args.name, password)
    from veilcam.common.keywrap import key_id_of

    key_id = key_id_of(ks.public_raw).hex()
    print(
        f"registered {args.name} on the store; your key id is {key_id}\n"
        f"give it to the admin, who grants access with 'veilcam grant {args.name} "
        f"--camera CAMERA --key-id {key_id} --home HOME'"
    )
    return 0


def cmd_grant(args: argparse.Namespace) -> int:
    from veilcam.admin import grant
    from veilcam.common.format import ZoneClass
    from veilcam.common.home import open_home

    home = open_home(args.home)
    try:
        classes = (
            [ZoneClass.from_label(c) for c in args.zones.split(",")]
            if args.zones is not None
            else ZoneClass.grantable()
        )
    except ValueError as exc:
        raise VeilcamError(f"--zones: {exc}") from None
    path = grant(home, args.name, args.camera, classes, args.key_id)
    print(
        f"granted {args.name} {', '.join(c.label for c in classes)} on camera {args.camera} "
        f"({path}); the camera starts a new key epoch when it sees the change\n"
        f"on a split deployment, copy {path.name} into the store home's grants/ folder: "
        "the store serves it to the camera"
    )
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    from veilcam.admin import revoke
    from veilcam.common.home import open_home

    home = open_home(args.home)
    path = revoke(home, args.name, args.camera)
    print(
        f"revoked {args.name} on camera {args.camera}: nothing from the camera's next key "
        f"epoch on will open for them\non a split deployment, copy {path.name} into the "
        "store home's grants/ folder: the camera learns of the revocation from the store"
    )
    return 0


def cmd_cert(args: argparse.Namespace) -> int:
    from veilcam.admin import check_node_name, reissue_identity, revoke_node
    from veilcam.common.home import open_home

    home = open_home(args.home)
    role, _, name = args.node.partition(":")
    if role not in ("camera", "store", "viewer") or not name:
        raise VeilcamError(
            f"name the node as ROLE:NAME (camera:door, viewer:viewer), not {args.node!r}"
        )
    check_node_name(role, name)
    if args.cert_command == "issue" and not 0 < args.days <= 36500:
        raise VeilcamError(f"--days must be more than 0 and at most 36500, not {args.days:g}")
    if args.cert_command == "revoke":
        serial = revoke_node(home, role, name)
        print(
            f"revoked the certificate of {role}:{name} (serial {serial:x}); nodes reload "
            "the revocation list within seconds once identities/ca/crl.pem reaches them"
        )
    else:
        replaced = home.cert_path(role, name).exists()
        path = reissue_identity(home, role, name, args.days)
        print(
            f"issued {path} (valid {args.days:g} days) with new keys for {role}:{name}"
            + (
                "; the certificate it replaces is valid only for what it signed before now "
                "(stop that node first: what it signs with its old key from now on fails "
                "verification). Copy identities/certs/ and identities/ca/crl.pem to every "
                "machine and the new keys to the node (docs/GUIDE.md, 'Certificates')"
                if replaced
                else ""
            )
        )
    return 0


def cmd_store(args: argparse.Namespace) -> int:
    from veilcam.common.home import open_home
    from veilcam.common.lifecycle import StopFlag
    from veilcam.common.malloc import pin_mmap_threshold, trim_periodically
    from veilcam.store_node.node import StoreNode

    stop = StopFlag().install()
    # memory stays flat after logins and bursts (common/malloc.py)
    pin_mmap_threshold()
    trim_periodically(stop)
    node = StoreNode(open_home(args.home), stop, args.stats_out, args.metrics_port)
    node.run(_ready_writer(args.ready_file))  # StoreBindError: one line, exit 2
    return 0


# how a camera run ended -> exit code (the camera parser's epilog says the same)
CAMERA_EXIT_CODES = {"COMPLETE": 0, "UNACKNOWLEDGED": 3, "REJECTED": 4}


def cmd_camera(args: argparse.Namespace) -> int:
    from veilcam.camera_node.node import CameraNode
    from veilcam.common import deployment
    from veilcam.common.config import CameraConfig, load_config
    from veilcam.common.home import open_home
    from veilcam.common.lifecycle import StopFlag
    from veilcam.common.malloc import keep_frame_buffers

    keep_frame_buffers()  # no page faults on every frame's buffers (common/malloc.py)
    home = open_home(args.home)
    cfg = (
        load_config(Path(args.config), CameraConfig)
        if args.config
        else deployment.camera_config(home)
    )
    if args.no_pace:
        cfg = cfg.model_copy(update={"camera": cfg.camera.model_copy(update={"pace": False})})
    stop = StopFlag().install()
    node = CameraNode(
        home,
        cfg,
        source_override=args.source,
        loop_override=True if args.loop else None,
        max_frames=args.max_frames,
        stop=stop,
        stats_out=args.stats_out,
        metrics_port=args.metrics_port,
    )
    outcome = node.run(_ready_writer(args.ready_file))
    return CAMERA_EXIT_CODES[outcome.name]


def cmd_view(args: argparse.Namespace) -> int:
    from veilcam.common import deployment
    from veilcam.common.home import open_home
    from veilcam.common.keystore import open_keystore
    from veilcam.common.lifecycle import StopFlag

    home = open_home(args.home)
    stop = StopFlag().install()
    if args.headless:
        from veilcam.viewer.headless import run_headless

        identity = None
        if args.keystore:
            identity = open_keystore(Path(args.keystore), _read_password(args))
        elif args.user:
            from veilcam.viewer.login import login

            identity = login(home, args.user, _read_password(args))
        if not args.out:
            raise VeilcamError("--headless needs --out DIR")
        if args.camera:
            from veilcam.common.format import validate_camera_id

            validate_camera_id(args.camera)
        cameras = [args.camera] if args.camera else None
        from_us = None
        if args.from_:
            from veilcam.viewer.playback import parse_time

            from_us = parse_time(args.from_)
            if cameras is None and len(deployment.trusted_cameras(home).camera_ids) == 1:
                cameras = deployment.trusted_cameras(home).camera_ids
        return run_headless(
            home,
            Path(args.out),
            args.frames,
            identity,
            cameras,
            args.timeout,
            stop,
            from_us,
            args.max_age,
            write_images=not args.no_images,
            on_ready=_ready_writer(args.ready_file),
        )
    if args.user:
        raise VeilcamError(
            "in the browser viewer, unlock from the page (the password never "
            "goes through the command line); --user is for --headless"
        )
    from veilcam.viewer.web import run_web

    return run_web(
        home,
        host=args.host,
        port=args.port,
        stop=stop,
        max_age_s=args.max_age,
        on_ready=_ready_writer(args.ready_file),
    )


EXIT_SELF_CERTIFIED = 3


def _verify_target(args: argparse.Namespace) -> tuple[Home, Path, bool]:
    """The home whose CA to trust, the archive folder to audit, and whether it's a bundle."""
    from veilcam.common import deployment
    from veilcam.common.home import Home

    target = Path(args.target).expanduser().resolve()
    is_bundle = (target / "manifest.json").exists()
    if args.trust:
        # trust anchors come from that home only, never from the target
        home = Home(Path(args.trust).expanduser().resolve())
        if is_bundle:
            archive = target / "archive"
        elif (target / "config").is_dir():
            archive = deployment.archive_dir(Home(target))
        else:
            archive = target
        if not (home.config_dir.is_dir() or home.ca_cert_path.exists()):
            raise VeilcamError(f"--trust {home.root} is not a veilcam home")
    elif (target / "config").is_dir():
        home = Home(target)
        archive = target / "archive" if is_bundle else deployment.archive_dir(home)
    else:
        raise VeilcamError(
            f"{target} is not a veilcam home; to verify a bare archive give "
            "the home whose certificates to trust with --trust HOME"
        )
    if not home.ca_cert_path.exists():
        raise VeilcamError(f"{home.root} has no deployment CA certificate ({home.ca_cert_path})")
    return home, archive, is_bundle


def cmd_verify(args: argparse.Namespace) -> int:
    """Exit 0 intact under a trusted CA, 1 problems, 2 cannot run, 3 self-certified (an
    evidence bundle checked without --trust: it verifies only against the CA it carries)."""
    from veilcam.common import deployment
    from veilcam.common.pki import ca_fingerprint, load_cert
    from veilcam.common.progress import Progress
    from veilcam.store_node.audit import audit_archive, format_report

    home, archive, is_bundle = _verify_target(args)
    target = Path(args.target).expanduser().resolve()
    objects = None  # a home whose store keeps closed segments in a bucket: read them there
    index = None  # ... and whose index is shared with other stores (PostgreSQL)
    if not is_bundle and (target / "config").is_dir():
        from veilcam.common.home import Home
        from veilcam.store_node.index import index_for_home
        from veilcam.store_node.objectstore import objects_for_home

        objects = objects_for_home(Home(target))
        index = index_for_home(Home(target))
    self_certified = is_bundle and not args.trust
    ca_sha = ca_fingerprint(load_cert(home.ca_cert_path))
    trust = deployment.trusted_cameras(home, history=True)
    with Progress("verify", unit="bytes") as bar:  # a bar on a terminal, else a line per 10 s
        report = audit_archive(
            archive,
            trust,
            lambda done, total, records: bar.update(done, total, f"{records} records"),
            objects,
            index,
        )
    if index is not None:
        index.close()
    bundle_problems: list[str] = []
    video_note = ""
    video_covered = False
    if is_bundle:  # an evidence bundle: its files must match too
        from veilcam.viewer.export import (
            check_bundle_files,
            check_video_samples,
            video_coverage_note,
        )

        bundle_problems = check_bundle_files(target)
        video_note = video_coverage_note(target)
        samples = check_video_samples(target, trust)  # a redacted H.264 export (a remux)
        if samples is not None:
            bundle_problems += [f"video: {p}" for p in samples.problems]
            video_covered = not samples.problems
            if video_covered:
                video_note = samples.note
    intact = report.intact and not bundle_problems
    if not intact:
        verdict, code = "NOT_INTACT", 1
    elif self_certified:
        verdict, code = "SELF_CERTIFIED", EXIT_SELF_CERTIFIED
    else:
        verdict, code = "INTACT", 0
    anchor = (
        "the CA carried by the bundle itself (no --trust)"
        if self_certified
        else f"the CA of {home.root}"
        + (" (--trust)" if args.trust else " (the home verified; no --trust)")
    )
    if args.json:
        doc = report.to_dict()
        doc.update(
            intact=intact,
            verdict=verdict,
            self_certified=self_certified,
            trust_anchor={"ca_sha256": ca_sha, "source": anchor, "home": str(home.root)},
        )
        if is_bundle:
            doc.update(
                bundle_problems=bundle_problems,
                ca_sha256=ca_sha,
                video_covered_by_signatures=video_covered,
                video_note=video_note,
            )
        print(json.dumps(doc, indent=2))
        return code
    print(format_report(report, verdict=False))
    for problem in bundle_problems:
        print(f"  PROBLEM bundle: {problem}")
    print(f"trust anchor: {anchor}, CA certificate SHA-256 (DER) {ca_sha}")
    if video_note:
        print(f"video: {video_note}")
    problems = len(report.problems) + len(bundle_problems)
    print(_verify_verdict_line(verdict, ca_sha, is_bundle, problems, video_covered))
    return code


def _verify_verdict_line(
    verdict: str, ca_sha: str, is_bundle: bool, problems: int, video_covered: bool = False
) -> str:
    """The one verdict, printed last, covering the records and the bundle's files."""
    if verdict == "NOT_INTACT":
        return f"NOT INTACT: {problems} problem(s)"
    if verdict == "SELF_CERTIFIED":
        return (
            f"SELF-CERTIFIED: every record verifies, but only against the CA the bundle "
            f"carries itself (SHA-256 {ca_sha}), which anyone can make with 'veilcam init'. "
            "Compare that fingerprint with the deployment's CA certificate, or verify with "
            "--trust HOME (exit 3)"
        )
    what = "evidence bundle records" if is_bundle else "every record"
    if is_bundle and video_covered:
        return (
            f"INTACT: {what} verified under the CA {ca_sha[:16]}..., chains complete; "
            "every video sample is a signed access unit"
        )
    return f"INTACT: {what} verified under the CA {ca_sha[:16]}..., chains complete" + (
        "; the video is not covered by the signatures (see above)" if is_bundle else ""
    )


def cmd_export(args: argparse.Namespace) -> int:
    from veilcam.common.home import open_home
    from veilcam.viewer.export import export
    from veilcam.viewer.login import login
    from veilcam.viewer.playback import parse_time
    from veilcam.viewer.private import make_private, private_umask

    home = open_home(args.home)
    identity = login(home, args.user, _read_password(args)) if args.user else None
    out = Path(args.out)
    if identity:  # unlocked: the MP4 shows what the zones hide; owner-only (0600/0700)
        with private_umask():
            manifest = export(
                home, args.camera, parse_time(args.from_), parse_time(args.to), out, identity
            )
        make_private(out)
        make_private(out.with_name(out.name + ".bundle"))
    else:
        manifest = export(
            home, args.camera, parse_time(args.from_), parse_time(args.to), out, identity
        )
    print(
        f"wrote {args.out} ({manifest['frames']} frames, {_export_view(manifest)}) and "
        f"{args.out}.bundle/ (verify it anywhere with 'veilcam verify {args.out}.bundle "
        "--trust HOME', HOME holding the deployment's CA certificate)"
    )
    return 0


def _export_view(manifest: dict) -> str:
    """What the exported video shows, said plainly: a user with no grant for that camera and
    period (revoked, or never granted) gets a redacted video, not an "unlocked" one."""
    user = manifest.get("unlocked_for")
    if not user:
        return "redacted"
    zones, opened = manifest.get("zones", 0), manifest.get("zones_unlocked", 0)
    if zones and opened == 0:
        return (
            f"REDACTED: {user} holds no grant for camera {manifest['camera']} in that period "
            "(revoked, or never granted), so no zone could be unlocked"
        )
    if opened < zones:
        return f"unlocked for {user}: {opened} of {zones} zones (the others outside their grant)"
    return f"unlocked for {user}: all {zones} zones"


def cmd_models_fetch(args: argparse.Namespace) -> int:
    from veilcam.camera_node.models import YUNET_URL, fetch_yunet

    path = fetch_yunet(args.url or YUNET_URL)
    print(f"YuNet face model ready at {path} (sha256 checked)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from veilcam.demo import run_demo

    return run_demo(Path(args.home), args.port_base, args.web_port, args.verbose)


def cmd_config_docs(args: argparse.Namespace) -> int:
    from veilcam.common.configdocs import render_config_docs

    text = render_config_docs()
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from veilcam.doctor import run_doctor

    return run_doctor(Path(args.home), as_json=args.json, timeout_s=args.timeout)


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="veilcam",
        description="Privacy-preserving security "
        "camera: redacted public stream, encrypted signed zones.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("init", help="create a deployment home (configs, identities, archive)")
    s.add_argument("home", help="the folder to create (must not hold a deployment yet)")
    s.add_argument(
        "--camera-id",
        default="cam1",
        help="id of the first camera: 1-64 letters, digits, '_', '.', '-' (default: cam1)",
    )
    s.add_argument("--source", help="camera source (default: the bundled sample clip)")
    s.add_argument("--loop", action="store_true", help="loop a file source")
    _port_options(s)
    s.set_defaults(func=cmd_init)

    s = sub.add_parser("user", help="manage users")
    usub = s.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    u = usub.add_parser("add", help="create a user and grant every camera")
    u.add_argument("name", help="the user's name")
    u.add_argument("--home", required=True, help=HELP_HOME)
    u.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the new password from standard input (one line; on a terminal: "
        "asked twice, not echoed)",
    )
    u.set_defaults(func=cmd_user_add)
    u = usub.add_parser(
        "passwd",
        help="change a user's password: re-seals their keystore in this home and changes "
        "their account on the store (both or neither)",
    )
    u.add_argument("name", help="the user's name")
    u.add_argument("--home", required=True, help=HELP_HOME)
    u.add_argument(
        "--local-only",
        action="store_true",
        help="re-seal the keystore in this home only; the store's account keeps the old password",
    )
    u.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the current password, then the new one, from standard input "
        "(one per line; on a terminal: asked without echo, the new one twice)",
    )
    u.set_defaults(func=cmd_user_passwd)

    s = sub.add_parser("register", help="register a user on the store (password from stdin)")
    s.add_argument("name")
    s.add_argument("--home", required=True)
    s.add_argument("--password-stdin", action="store_true")
    s.set_defaults(func=cmd_register)

    s = sub.add_parser("grant", help="let a user unlock zone classes of a camera (admin)")
    s.add_argument("name")
    s.add_argument("--camera", required=True)
    s.add_argument(
        "--zones", help="comma-separated zone classes: faces,plates,people,static (default: all)"
    )
    s.add_argument(
        "--key-id",
        help="the user's key id as 'veilcam register' showed it to them; needed when "
        "their keystore is not in this home: their public keys then come from the store's "
        "accounts/ folder if this home holds it, else from the running store (KEYS query), "
        "and are used only if they match this id",
    )
    s.add_argument("--home", required=True)
    s.set_defaults(func=cmd_grant)

    s = sub.add_parser("revoke", help="take a user's access to a camera away (admin)")
    s.add_argument("name", help="the user's name")
    s.add_argument("--camera", required=True, help="the camera id")
    s.add_argument("--home", required=True, help="the admin's home (holds the CA key)")
    s.set_defaults(func=cmd_revoke)

    s = sub.add_parser("cert", help="node certificates (admin)")
    csub = s.add_subparsers(dest="cert_command", required=True, metavar="ACTION")
    c = csub.add_parser("revoke", help="put a node's certificate on the revocation list")
    c.add_argument("node", metavar="ROLE:NAME")
    c.add_argument("--home", required=True)
    c.set_defaults(func=cmd_cert)
    c = csub.add_parser("issue", help="new keys and certificate for a node")
    c.add_argument("node", metavar="ROLE:NAME")
    c.add_argument("--home", required=True)
    c.add_argument("--days", type=float, default=365)
    c.set_defaults(func=cmd_cert)

    s = sub.add_parser("store", help="run the store node")
    s.add_argument("--home", required=True, help=HELP_HOME)
    _node_run_options(s)
    _ready_file_option(s, "once its sockets are bound: pid, ingest, relay, query, metrics")
    s.set_defaults(func=cmd_store)

    s = sub.add_parser(
        "camera",
        help="run the camera node",
        description="Run the camera node until its source ends, --max-frames, or Ctrl-C.",
        epilog="exit codes: 0 every message acknowledged by the store; 3 messages left "
        "unacknowledged (they stay in the spool and are sent on the next run); 4 the store "
        "refused messages (see the log); 1/2 errors.",
    )
    s.add_argument("--home", required=True, help=HELP_HOME)
    s.add_argument("--config", help="camera config (default: HOME/config/camera.toml)")
    s.add_argument("--source", help="device index, video file or rtsp/http URL")
    s.add_argument("--loop", action="store_true", help="loop a file source")
    s.add_argument("--max-frames", type=_count, help="stop after publishing N frames")
    s.add_argument(
        "--no-pace",
        action="store_true",
        help="read a file as fast as possible instead of at its frame rate",
    )
    _node_run_options(s)
    _ready_file_option(s, "once it has sent its first key envelope: pid, camera, ingest, metrics")
    s.set_defaults(func=cmd_camera)

    s = sub.add_parser("view", help="run a viewer (browser page or headless)")
    s.add_argument("--home", required=True, help=HELP_HOME)
    s.add_argument("--user", help="unlock as this user (headless)")
    s.add_argument("--password-stdin", action="store_true", help=HELP_PASSWORD_STDIN)
    s.add_argument(
        "--keystore",
        help="unlock offline with this keystore file instead of logging in to the store",
    )
    mode = s.add_mutually_exclusive_group()
    mode.add_argument("--web", action="store_true", help="serve the browser page (default)")
    mode.add_argument("--headless", action="store_true", help="write frames to --out")
    s.add_argument("--host", help="address of the browser page (default from viewer.toml)")
    s.add_argument("--port", type=_port, help="port of the browser page")
    s.add_argument("--out", help="headless: output folder")
    s.add_argument("--frames", type=_count, default=30, help="headless: frames to write")
    s.add_argument(
        "--no-images",
        action="store_true",
        help="headless: write only "
        "frames.jsonl (every frame is still verified and unlocked), no PNGs",
    )
    s.add_argument("--camera", help="only this camera")
    s.add_argument(
        "--from",
        dest="from_",
        metavar="TIME",
        help="play the archive from TIME "
        "(ISO 8601, unix seconds, or 'start') instead of the live stream",
    )
    s.add_argument(
        "--timeout", type=_seconds, default=120.0, help="headless: give up after this many seconds"
    )
    s.add_argument(
        "--max-age",
        type=_seconds,
        default=2.0,
        metavar="S",
        help="live: a frame captured more than S seconds ago (plus the clock "
        "difference with the store, measured at start) is marked STALE, not live "
        "(default: 2)",
    )
    _ready_file_option(s, "once the page listens (url, relay) or headless waits for frames")
    s.set_defaults(func=cmd_view)

    s = sub.add_parser(
        "verify",
        help="check every archived message (exit 0 only if intact)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Re-verify an archive, a home's archive or an evidence bundle.",
        epilog="exit codes:\n"
        "  0  intact, under the CA of --trust HOME (or of the home verified)\n"
        "  1  problems (each listed with its kind and position)\n"
        "  2  cannot run (not a home, no CA certificate, bad arguments)\n"
        "  3  self-certified: an evidence bundle verified without --trust; its records\n"
        "     verify only against the CA it carries itself, whose SHA-256 is printed\n"
        "     (compare it with the deployment's, or give --trust HOME)\n"
        "The video of a bundle is derived from the verified frames and is NOT covered\n"
        "by the signatures.",
    )
    s.add_argument("target", metavar="HOME_OR_ARCHIVE")
    s.add_argument(
        "--trust",
        metavar="HOME",
        help="the home whose CA, revocation list and "
        "camera certificates to trust (only those: the target's own certificates "
        "are ignored); needed for a bare archive and for evidence handed to you",
    )
    s.add_argument("--json", action="store_true", help="machine-readable report")
    s.set_defaults(func=cmd_verify)

    s = sub.add_parser("export", help="a time range as MP4 + an evidence bundle")
    s.add_argument("--home", required=True, help=HELP_HOME)
    s.add_argument("--camera", required=True, help="the camera id")
    s.add_argument(
        "--from",
        dest="from_",
        required=True,
        metavar="T1",
        help="start: ISO 8601 (UTC unless it says otherwise) or unix seconds",
    )
    s.add_argument(
        "--to",
        required=True,
        metavar="T2",
        help="end: ISO 8601 (UTC unless it says otherwise) or unix seconds",
    )
    s.add_argument(
        "--out",
        required=True,
        metavar="FILE.mp4",
        help="the MP4 to write; the bundle goes to FILE.mp4.bundle/ (unlocked "
        "exports are owner-only)",
    )
    s.add_argument("--user", help="unlock as this user (log-in on the store)")
    s.add_argument("--password-stdin", action="store_true", help=HELP_PASSWORD_STDIN)
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("models", help="manage detector models")
    msub = s.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    m = msub.add_parser("fetch", help="download YuNet from OpenCV Zoo (sha256 pinned)")
    m.add_argument("--url", help="another address serving the same file")
    m.set_defaults(func=cmd_models_fetch)

    s = sub.add_parser("demo", help="run store, camera (sample clip) and browser viewer")
    s.add_argument("--home", default="veilcam-demo", help="demo deployment folder")
    _port_options(s)
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("config-docs", help="print the config reference (Markdown)")
    s.add_argument("--out", help="write to this file")
    s.set_defaults(func=cmd_config_docs)

    s = sub.add_parser(
        "doctor",
        help="check a deployment; says how to fix what is wrong (exit 1 if any check FAILs)",
    )
    s.add_argument("--home", required=True, help=HELP_HOME)
    s.add_argument("--json", action="store_true", help="machine-readable report")
    s.add_argument(
        "--timeout",
        type=_seconds,
        default=3.0,
        metavar="S",
        help="seconds to wait for the store at each endpoint",
    )
    s.set_defaults(func=cmd_doctor)
    _verbose_after_command(p)
    _default_help(p)
    return p


def _ready_file_option(parser: argparse.ArgumentParser, when: str) -> None:
    parser.add_argument(
        "--ready-file",
        type=_output_file,
        metavar="PATH",
        help=f"write PATH (JSON, atomically) {when}; for scripts that wait for the node",
    )


HELP_HOME = "the deployment folder (a veilcam home: config/, identities/, ...)"
HELP_PASSWORD_STDIN = (
    "read the password from standard input (one line; on a terminal it is asked without echo)"
)
# help for flags defined without one, by destination (every flag of every command has help)
DEFAULT_HELP = {
    "home": HELP_HOME,
    "password_stdin": HELP_PASSWORD_STDIN,
    "name": "the user's name",
    "camera": "the camera id",
    "node": "the node as ROLE:NAME (camera:door, viewer:laptop, store:store)",
    "days": "how many days the certificate is valid (default: 365)",
    "target": "a home, a bare archive folder (with --trust) or an evidence bundle "
    "(FILE.mp4.bundle)",
}


def _default_help(parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                _default_help(subparser)
        elif not action.help and action.dest in DEFAULT_HELP:
            action.help = DEFAULT_HELP[action.dest]


def _verbose_after_command(parser: argparse.ArgumentParser) -> None:
    """Accept -v/--verbose after the command too ('veilcam verify -v X' is 'veilcam -v verify
    X'); SUPPRESS keeps the global flag's value when it is not repeated there."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                subparser.add_argument(
                    "-v",
                    "--verbose",
                    action="store_true",
                    default=argparse.SUPPRESS,
                    help="log more detail (DEBUG)",
                )
                _verbose_after_command(subparser)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from veilcam.common.lifecycle import setup_logging

    setup_logging(args.verbose)
    try:
        return args.func(args)
    except VeilcamError as exc:
        print(f"veilcam: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader of our output went away (``veilcam verify --json | head``): not an error
        # of ours; point stdout at /dev/null so the interpreter's final flush stays quiet
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
