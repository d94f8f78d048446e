"""Regenerate the seed corpus in tests/security/corpus/ from the real encoders.

    python -m tests.security.make_corpus

Valid entries come from the code that builds messages on the camera and the store (the test
factory around ``camera_node.protect``, ``build_envelope``, ``sign_gap_notice``,
``sign_grant``, ``encode_record``); malformed and tampered ones are those, changed in one
named way each. New keys are generated on every run (public halves in ``corpus/keys``), so
entries added by hand that carry signatures must be re-made after regenerating. Files are kept
small (48x32 frames) so the corpus stays a few hundred kilobytes.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import mlkem
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from veilcam.camera_node.protect import EncodeSettings, Epoch, sign_gap_notice
from veilcam.camera_node.zones import Zone
from veilcam.common.format import (
    Ack,
    AckStatus,
    FrameMessage,
    ImageCodec,
    KemSuite,
    ZoneClass,
    pack_parts,
)
from veilcam.common.grants import sign_grant
from veilcam.common.keywrap import Grant, Recipient
from veilcam.common.pki import create_ca
from veilcam.common.segments import encode_record, segment_header

from tests.factory import Camera, textured
from tests.security.fuzzlib import CAMERA_ID, CORPUS, KEYS, encode_parts

W, H = 48, 32
L = len(CAMERA_ID)
# frame header offsets for a 4-character camera id (docs/FORMAT.md, "Frame header")
OFF = {
    "magic": 0,
    "version": 4,
    "flags": 5,
    "camera_id_len": 6,
    "camera_id": 7,
    "seq": 7 + L,
    "capture_time_us": 15 + L,
    "epoch_id": 23 + L,
    "prev_digest": 39 + L,
    "image_codec": 71 + L,
    "width": 72 + L,
    "height": 74 + L,
    "image_len": 76 + L,
    "image_sha256": 80 + L,
    "zone_count": 112 + L,
    "zones": 114 + L,
}
ZONE = {
    "class": 0,
    "codec": 1,
    "x": 2,
    "y": 4,
    "w": 6,
    "h": 8,
    "ciphertext_len": 10,
    "ciphertext_sha256": 14,
}
ZONE_LEN = 46


def patch(data: bytes, offset: int, new: bytes) -> bytes:
    return data[:offset] + new + data[offset + len(new) :]


def zone_field(i: int, name: str) -> int:
    return OFF["zones"] + ZONE_LEN * i + ZONE[name]


def xor(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    return patch(data, offset, bytes([data[offset] ^ mask]))


def with_header(parts: list[bytes], header: bytes) -> list[bytes]:
    return [parts[0], header, *parts[2:]]


def small_zones() -> list[Zone]:
    return [Zone(4, 4, 12, 12, ZoneClass.FACE), Zone(28, 16, 16, 12, ZoneClass.STATIC)]


def frames(cam: Camera) -> dict[str, FrameMessage]:
    image = textured(W, H, seed=3)
    out = {
        "chain-start": cam.frame(image, small_zones()),
        "next": cam.frame(image, small_zones()),
        "no-zones": cam.frame(image, []),
        "full-zone": cam.frame(image, [Zone(0, 0, W, H, ZoneClass.FULL)]),
        "png-zone": cam.frame(image, small_zones(), EncodeSettings(zone_codec=ImageCodec.PNG)),
        "raw-zone": cam.frame(image, small_zones(), EncodeSettings(zone_codec=ImageCodec.RAW_BGR)),
        "four-classes": cam.frame(
            image,
            [
                Zone(0, 0, 8, 8, ZoneClass.STATIC),
                Zone(8, 0, 8, 8, ZoneClass.FACE),
                Zone(16, 0, 8, 8, ZoneClass.PERSON),
                Zone(24, 0, 8, 8, ZoneClass.PLATE),
            ],
        ),
    }
    return out


def frame_entries(cam: Camera) -> dict[str, list[bytes]]:
    good = frames(cam)
    entries = {f"ok-frame-{name}": msg.to_parts() for name, msg in good.items()}
    p = good["next"].to_parts()
    h = p[1]
    first = good["chain-start"].to_parts()
    u16, u32, u64 = (
        (lambda v: struct.pack(">H", v)),
        (lambda v: struct.pack(">I", v)),
        (lambda v: struct.pack(">Q", v)),
    )
    bad = {
        "magic": with_header(p, patch(h, 0, b"XCFH")),
        "version-2": with_header(p, patch(h, OFF["version"], b"\x02")),
        "flags-unknown-bit": with_header(p, patch(h, OFF["flags"], b"\x80")),
        "chain-start-flag-with-prev-digest": with_header(p, patch(h, OFF["flags"], b"\x01")),
        "zero-prev-digest-without-flag": with_header(first, patch(first[1], OFF["flags"], b"\x00")),
        "camera-id-len-0": with_header(p, patch(h, OFF["camera_id_len"], b"\x00")),
        "camera-id-len-65": with_header(p, patch(h, OFF["camera_id_len"], b"\x41")),
        "camera-id-not-ascii": with_header(p, patch(h, OFF["camera_id"], b"c\xffm1")),
        "camera-id-bad-chars": with_header(p, patch(h, OFF["camera_id"], b"-am1")),
        "image-codec-0": with_header(p, patch(h, OFF["image_codec"], b"\x00")),
        "width-0": with_header(p, patch(h, OFF["width"], u16(0))),
        "height-0": with_header(p, patch(h, OFF["height"], u16(0))),
        "image-len-64mib-plus-1": with_header(p, patch(h, OFF["image_len"], u32(64 * 2**20 + 1))),
        "image-len-4gib": with_header(p, patch(h, OFF["image_len"], u32(2**32 - 1))),
        "image-len-mismatch": with_header(p, patch(h, OFF["image_len"], u32(len(p[3]) + 1))),
        "zone-count-257": with_header(p, patch(h, OFF["zone_count"], u16(257))),
        "zone-count-65535": with_header(p, patch(h, OFF["zone_count"], u16(65535))),
        "zone-count-plus-1": with_header(p, patch(h, OFF["zone_count"], u16(3))),
        "zone-count-minus-1": with_header(p, patch(h, OFF["zone_count"], u16(1))),
        "zone-class-0": with_header(p, patch(h, zone_field(0, "class"), b"\x00")),
        "zone-class-9": with_header(p, patch(h, zone_field(0, "class"), b"\x09")),
        "zone-codec-0": with_header(p, patch(h, zone_field(1, "codec"), b"\x00")),
        "zone-outside-frame": with_header(p, patch(h, zone_field(1, "x"), u16(W))),
        "zone-width-0": with_header(p, patch(h, zone_field(0, "w"), u16(0))),
        "zone-rect-overflow": with_header(p, patch(h, zone_field(0, "x"), u16(65535))),
        "zone-ciphertext-len-64mib-plus-1": with_header(
            p, patch(h, zone_field(0, "ciphertext_len"), u32(64 * 2**20 + 1))
        ),
        "zone-ciphertext-len-mismatch": with_header(
            p, patch(h, zone_field(0, "ciphertext_len"), u32(len(p[4]) + 1))
        ),
        "seq-2-pow-63": with_header(p, patch(h, OFF["seq"], u64(2**63))),
        "capture-time-u64-max": with_header(p, patch(h, OFF["capture_time_us"], u64(2**64 - 1))),
        "header-trailing-byte": with_header(p, h + b"\x00"),
        "header-truncated": with_header(p, h[:-1]),
        "header-only-magic": with_header(p, h[:4]),
        "header-empty": with_header(p, b""),
        "signature-63-bytes": [*p[:2], p[2][:63], *p[3:]],
        "signature-65-bytes": [*p[:2], p[2] + b"\x00", *p[3:]],
        "missing-zone-part": p[:-1],
        "extra-part": [*p, b"extra"],
        "extra-empty-part": [*p, b""],
        "missing-image-and-zones": p[:3],
        "only-topic": p[:1],
        "empty-message": [],
        "topic-other-camera": [b"cam2\x00F", *p[1:]],
        "topic-unknown-kind": [b"cam1\x00Z", *p[1:]],
        "topic-envelope-kind": [b"cam1\x00K", *p[1:]],
        "topic-without-kind": [b"cam1", *p[1:]],
    }
    entries.update({f"bad-frame-{k}": v for k, v in bad.items()})
    other = Camera(CAMERA_ID)  # another key, same camera id
    other.seq, other.prev = 10, b"\x01" * 32
    stranger = Camera("cam2")
    late = patch(h, OFF["capture_time_us"], u64(2**62))
    tampered = {
        "seq": with_header(p, xor(h, OFF["seq"] + 7)),
        "capture-time": with_header(p, xor(h, OFF["capture_time_us"] + 7)),
        # signed by the camera itself: verifies now, but no datetime (and no certificate)
        # holds year 148108: the archive audit and playback must refuse it, not crash
        "capture-time-year-148108-signed": [p[0], late, cam.key.sign(late), *p[3:]],
        "epoch-id": with_header(p, xor(h, OFF["epoch_id"])),
        "prev-digest": with_header(p, xor(h, OFF["prev_digest"])),
        "width": with_header(p, patch(h, OFF["width"], u16(W - 1))),
        "image-sha256": with_header(p, xor(h, OFF["image_sha256"])),
        "zone-class": with_header(p, patch(h, zone_field(0, "class"), b"\x01")),
        "zone-rect": with_header(p, xor(h, zone_field(0, "x") + 1)),
        "zone-codec": with_header(p, patch(h, zone_field(0, "codec"), b"\x02")),
        "zone-ciphertext-sha256": with_header(p, xor(h, zone_field(1, "ciphertext_sha256"))),
        "zones-swapped": [
            p[0],
            h[: OFF["zones"]]
            + h[OFF["zones"] + ZONE_LEN :]
            + h[OFF["zones"] : OFF["zones"] + ZONE_LEN],
            p[2],
            p[3],
            p[5],
            p[4],
        ],
        "image-byte": [*p[:3], xor(p[3], len(p[3]) // 2), *p[4:]],
        "zone-ciphertext-byte": [*p[:4], xor(p[4], 0), *p[5:]],
        "signature": [p[0], h, xor(p[2], 10), *p[3:]],
        "signed-by-another-key": other.frame(textured(W, H), small_zones()).to_parts(),
        "unknown-camera": stranger.frame(textured(W, H), small_zones()).to_parts(),
    }
    entries.update({f"tampered-frame-{k}": v for k, v in tampered.items()})
    return entries


def envelope_entries(cam: Camera) -> dict[str, list[bytes]]:
    two = Camera(CAMERA_ID, users=2)
    two.key = cam.key
    x, m = X25519PrivateKey.generate(), mlkem.MLKEM768PrivateKey.generate()
    pq = cam.epoch.envelope(
        cam.key,
        CAMERA_ID,
        7,
        [Grant(Recipient("pq", x.public_key(), m.public_key()), frozenset(ZoneClass.grantable()))],
        KemSuite.MLKEM768X25519_HKDF_SHA256_AES256GCM,
    )
    good = {
        "two-users": two.envelope(),
        "no-recipients": cam.epoch.envelope(cam.key, CAMERA_ID, 0, []),
        "faces-only": cam.envelope(frozenset({ZoneClass.FACE})),
        "post-quantum": pq,
    }
    entries = {f"ok-envelope-{k}": v.to_parts() for k, v in good.items()}
    p = good["two-users"].to_parts()
    b = p[1]
    base = 7 + L  # epoch_id
    count_at, first_entry = base + 16 + 16, base + 16 + 16 + 2
    bad = {
        "magic": [p[0], patch(b, 0, b"VCKX"), p[2]],
        "version-0": [p[0], patch(b, 4, b"\x00"), p[2]],
        "suite-9": [p[0], patch(b, 5, b"\x09"), p[2]],
        "camera-id-len-0": [p[0], patch(b, 6, b"\x00"), p[2]],
        "entry-count-4097": [p[0], patch(b, count_at, struct.pack(">H", 4097)), p[2]],
        "entry-count-plus-1": [p[0], patch(b, count_at, struct.pack(">H", 11)), p[2]],
        "entry-class-0": [p[0], patch(b, first_entry + 16, b"\x00"), p[2]],
        "sealed-len-4097": [p[0], patch(b, first_entry + 17, struct.pack(">H", 4097)), p[2]],
        "sealed-len-65535": [p[0], patch(b, first_entry + 17, struct.pack(">H", 65535)), p[2]],
        "body-truncated": [p[0], b[:-1], p[2]],
        "body-trailing-byte": [p[0], b + b"\x00", p[2]],
        "signature-63-bytes": [p[0], b, p[2][:63]],
        "four-parts": [*p, b""],
        "two-parts": p[:2],
        "topic-other-camera": [b"cam2\x00K", *p[1:]],
        "created-us-u64-max": [p[0], patch(b, base + 16, struct.pack(">Q", 2**64 - 1)), p[2]],
        "first-seq-2-pow-63": [p[0], patch(b, base + 24, struct.pack(">Q", 2**63)), p[2]],
    }
    entries.update({f"bad-envelope-{k}": v for k, v in bad.items()})
    tampered = {
        "created-us": [p[0], xor(b, base + 16 + 7), p[2]],
        "created-us-year-148108": [p[0], patch(b, base + 16, struct.pack(">Q", 2**62)), p[2]],
        "epoch-id": [p[0], xor(b, base), p[2]],
        "first-seq": [p[0], xor(b, base + 16 + 8 + 7), p[2]],
        "recipient-key-id": [p[0], xor(b, first_entry), p[2]],
        "sealed-key-byte": [p[0], xor(b, first_entry + 19 + 40), p[2]],
        "entry-class": [p[0], patch(b, first_entry + 16, b"\x05"), p[2]],
        "signature": [p[0], b, xor(p[2], 0)],
    }
    entries.update({f"tampered-envelope-{k}": v for k, v in tampered.items()})
    return entries


def gap_entries(cam: Camera) -> dict[str, list[bytes]]:
    notice = sign_gap_notice(cam.key, CAMERA_ID, 5, 9)
    p = notice.to_parts()
    b = p[1]
    first_at = 6 + L
    entries = {
        "ok-gap-spool-full": p,
        "ok-gap-one-frame": sign_gap_notice(cam.key, CAMERA_ID, 12, 12).to_parts(),
    }
    bad = {
        "magic": [p[0], patch(b, 0, b"VCGX"), p[2]],
        "version-2": [p[0], patch(b, 4, b"\x02"), p[2]],
        "last-before-first": [p[0], patch(b, first_at, struct.pack(">QQ", 9, 5)), p[2]],
        "reason-9": [p[0], patch(b, first_at + 16, b"\x09"), p[2]],
        "truncated": [p[0], b[:-1], p[2]],
        "trailing-byte": [p[0], b + b"\x00", p[2]],
        "signature-63-bytes": [p[0], b, p[2][:63]],
        "two-parts": p[:2],
        "topic-other-camera": [b"cam2\x00G", *p[1:]],
        "created-u64-max": [p[0], patch(b, first_at + 17, b"\xff" * 8), p[2]],
        "last-seq-2-pow-63": [p[0], patch(b, first_at + 8, struct.pack(">Q", 2**63)), p[2]],
    }
    entries.update({f"bad-gap-{k}": v for k, v in bad.items()})
    entries.update(
        {
            "tampered-gap-first-seq": [p[0], xor(b, first_at + 7, 0x02), p[2]],
            "tampered-gap-created-year-148108": [
                p[0],
                patch(b, first_at + 17, struct.pack(">Q", 2**62)),
                p[2],
            ],
            "tampered-gap-signature": [p[0], b, xor(p[2], 63)],
        }
    )
    return entries


def ack_entries() -> dict[str, list[bytes]]:
    stored = Ack(AckStatus.STORED, b"F", 41, CAMERA_ID).to_parts()
    entries = {
        "ok-ack-stored": stored,
        "ok-ack-duplicate": Ack(AckStatus.DUPLICATE, b"F", 40, CAMERA_ID).to_parts(),
        "ok-ack-rejected": Ack(
            AckStatus.REJECTED, b"F", 42, CAMERA_ID, "frame cam1#42: signature does not verify"
        ).to_parts(),
        "ok-ack-envelope": Ack(AckStatus.STORED, b"K", 0, CAMERA_ID, "", b"\x11" * 16).to_parts(),
        "ok-ack-gap": Ack(AckStatus.STORED, b"G", 5, CAMERA_ID).to_parts(),
        "bad-ack-magic": [patch(stored[0], 0, b"XCAK"), *stored[1:]],
        "bad-ack-status-9": [patch(stored[0], 4, b"\x09"), *stored[1:]],
        "bad-ack-kind-x": [patch(stored[0], 5, b"X"), *stored[1:]],
        "bad-ack-short-head": [stored[0][:-1], *stored[1:]],
        "bad-ack-three-parts": stored[:3],
        "bad-ack-five-parts": [*stored, b""],
        "bad-ack-empty": [],
    }
    return entries


def record_entries(frame: FrameMessage, envelope, gap) -> dict[str, bytes]:
    body = pack_parts(b"F", frame.body_parts())
    entries = {
        "ok-record-frame": body,
        "ok-record-envelope": pack_parts(b"K", envelope.body_parts()),
        "ok-record-gap": pack_parts(b"G", gap.body_parts()),
        "ok-record-no-parts": pack_parts(b"F", []),
    }
    entries.update(
        {
            "bad-record-kind-z": b"Z" + body[1:],
            "bad-record-part-count-1025": patch(body, 1, struct.pack(">H", 1025)),
            "bad-record-part-count-65535": patch(body, 1, struct.pack(">H", 65535)),
            "bad-record-part-count-plus-1": patch(
                body, 1, struct.pack(">H", len(frame.body_parts()) + 1)
            ),
            "bad-record-part-len-4gib": patch(body, 3, struct.pack(">I", 2**32 - 1)),
            "bad-record-part-len-plus-1": patch(
                body, 3, struct.pack(">I", len(frame.header_bytes) + 1)
            ),
            "bad-record-trailing-byte": body + b"\x00",
            "bad-record-two-bytes": body[:2],
            "bad-record-empty": b"",
        }
    )
    return entries


def grant_entries() -> tuple[dict[str, bytes], bytes]:
    ca_key, ca_cert = create_ca("veilcam fuzz corpus CA")
    rogue_key, _ = create_ca("rogue")
    x = (
        X25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    pq = mlkem.MLKEM768PrivateKey.generate().public_key().public_bytes_raw()
    good = {
        "all-classes": sign_grant(ca_key, "alice", CAMERA_ID, ZoneClass.grantable(), x, pq),
        "faces-only": sign_grant(ca_key, "carol", CAMERA_ID, [ZoneClass.FACE], x, pq),
        "revoked": sign_grant(ca_key, "alice", CAMERA_ID, [], x, pq, revoked=True),
        "no-pq-key": sign_grant(ca_key, "dave", CAMERA_ID, [ZoneClass.PLATE], x),
    }
    entries = {f"ok-grant-{k}": v for k, v in good.items()}
    doc = json.loads(good["faces-only"])

    def edited(**changes) -> bytes:
        out = {**doc, **changes}
        for key, value in changes.items():
            if value is None:
                del out[key]
        return json.dumps(out, indent=2, allow_nan=True).encode()

    entries.update(
        {
            "forged-grant-other-ca": sign_grant(
                rogue_key, "carol", CAMERA_ID, [ZoneClass.FACE], x, pq
            ),
            "forged-grant-classes-widened": edited(classes=["face", "person", "plate", "static"]),
            "forged-grant-serial-raised": edited(serial=doc["serial"] + 1),
            "forged-grant-user-changed": edited(user="mallory"),
            "forged-grant-revoked-cleared": json.dumps(
                {**json.loads(good["revoked"]), "revoked": False}
            ).encode(),
            "forged-grant-key-swapped": edited(public_key="11" * 32),
            "forged-grant-signature-zero": edited(signature="A" * 86 + "=="),
            "bad-grant-not-json": b"{not json",
            "bad-grant-not-utf8": b"\xff\xfe{}",
            "bad-grant-deep-nesting": b"[" * 5000 + b"]" * 5000,
            "bad-grant-top-level-list": b"[]",
            "bad-grant-serial-infinity": edited(serial=float("inf")),
            "bad-grant-serial-1e999": edited(serial=0).replace(b'"serial": 0', b'"serial": 1e999'),
            "bad-grant-serial-5000-digits": edited(serial=0).replace(
                b'"serial": 0', b'"serial": ' + b"9" * 5000
            ),
            "bad-grant-serial-text": edited(serial="soon"),
            "bad-grant-camera-invalid": edited(camera="bad id!"),
            "bad-grant-camera-number": edited(camera=7),
            "bad-grant-missing-user": edited(user=None),
            "bad-grant-missing-signature": edited(signature=None),
            "bad-grant-format": edited(format="veilcam-grant-v2"),
            "bad-grant-public-key-short": edited(public_key="00" * 31),
            "bad-grant-public-key-not-hex": edited(public_key="zz" * 32),
            "bad-grant-pq-key-wrong-length": edited(pq_public_key="00" * 10),
            "bad-grant-signature-not-base64": edited(signature="***"),
            "bad-grant-classes-unknown": edited(classes=["cats"]),
            "bad-grant-classes-full": edited(classes=["full"]),
            "bad-grant-classes-string": edited(classes="face"),
            "bad-grant-classes-numbers": edited(classes=[2]),
        }
    )
    return entries, ca_cert.public_bytes(serialization.Encoding.PEM)


def segment_entries(cam: Camera, envelope, gap) -> dict[str, bytes]:
    image = textured(W, H, seed=5)
    cam.seq, cam.prev = 100, b"\x02" * 32
    f1, f2 = cam.frame(image, small_zones()), cam.frame(image, [])
    head = segment_header(CAMERA_ID)
    records = [
        encode_record(b"K", envelope.body_parts()),
        encode_record(b"F", f1.body_parts()),
        encode_record(b"F", f2.body_parts()),
        encode_record(b"G", gap.body_parts()),
    ]
    good = head + b"".join(records)
    r1 = len(head) + len(records[0])  # offset of the first frame record

    def crc_fixed(body: bytes) -> bytes:
        return struct.pack(">II", len(body), zlib.crc32(body)) + body

    return {
        "ok-segment-envelope-frames-gap": good,
        "ok-segment-header-only": head,
        "bad-segment-empty-file": b"",
        "bad-segment-magic": patch(good, 0, b"XSEG"),
        "bad-segment-version-2": patch(good, 4, b"\x02"),
        "bad-segment-camera-id-invalid": patch(good, 6, b"-"),
        "bad-segment-camera-id-len-past-end": head[:5] + b"\xff" + CAMERA_ID.encode(),
        "bad-segment-record-length-4gib": patch(good, r1, b"\xff\xff\xff\xff"),
        "bad-segment-record-length-255mib": patch(good, r1, struct.pack(">I", 255 * 2**20)),
        "bad-segment-record-length-plus-1": patch(
            good, r1, struct.pack(">I", len(records[1]) - 8 + 1)
        ),
        "bad-segment-crc-flipped": xor(good, r1 + 4),
        "bad-segment-body-byte-flipped": xor(good, r1 + 8 + 20),
        "bad-segment-body-kind-unknown-crc-fixed": good[:r1]
        + crc_fixed(b"Z" + records[1][9:])
        + good[r1 + len(records[1]) :],
        "bad-segment-part-count-overflow-crc-fixed": good[:r1]
        + crc_fixed(patch(records[1][8:], 1, b"\xff\xff"))
        + good[r1 + len(records[1]) :],
        "bad-segment-truncated-mid-record": good[: r1 + 100],
        "bad-segment-stray-bytes-at-end": good + b"\x00\x00\x03",
    }


def main(out: Path = CORPUS) -> None:
    cam = Camera(CAMERA_ID)
    multipart = {"frame": frame_entries(cam)}
    cam.epoch = Epoch.new()
    multipart["envelope"] = envelope_entries(cam)
    multipart["gap"] = gap_entries(cam)
    multipart["ack"] = ack_entries()
    for folder, items in multipart.items():
        for name, parts in items.items():
            write(out / folder / f"{name}.bin", encode_parts(parts))
    one_frame = frames(Camera(CAMERA_ID))["next"]
    env, gap = cam.envelope(), sign_gap_notice(cam.key, CAMERA_ID, 5, 9)
    for name, data in record_entries(one_frame, env, gap).items():
        write(out / "record" / f"{name}.bin", data)
    grants, ca_pem = grant_entries()
    for name, data in grants.items():
        write(out / "grant" / f"{name}.json", data)
    for name, data in segment_entries(cam, env, gap).items():
        write(out / "segment" / f"{name}.vseg", data)
    write(
        KEYS / f"camera-{CAMERA_ID}.pub",
        cam.key.public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        .hex()
        .encode()
        + b"\n",
    )
    write(KEYS / "ca.pem", ca_pem)


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


if __name__ == "__main__":
    main()
    print(f"corpus written to {CORPUS}")
