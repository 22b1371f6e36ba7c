"""Confidential mode's envelope: HPKE-sealed requests and sequence-numbered sealed responses.

The client seals a request body to the engine side's public key with HPKE (RFC 9180,
base mode; suite DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM, through
``pyhpke``). What a gateway may read is declared in plain headers and bound to the
ciphertext as its associated data, so it cannot be changed on the way undetected:

==========================  ===============================================
``x-sincere-sealed-key``    id of the recipient key (16 hex: SHA-256 prefix)
``x-sincere-model``         model to route to
``x-sincere-prompt-tokens`` the prompt's length in tokens (a declared upper bound)
``x-sincere-max-tokens``    the most tokens the answer may have
``x-sincere-stream``        ``1`` for an SSE stream, ``0`` otherwise
``x-sincere-sealed-at``     when it was sealed, whole Unix seconds (replays)
==========================  ===============================================

plus, unbound (the gateway's own business), ``x-sincere-tier``,
``x-sincere-priority`` and ``x-sincere-deadline-s``. The body is ``enc`` (32 bytes)
followed by the ciphertext, ``Content-Type: application/sincere-sealed``: a gateway
relays it byte for byte.

Responses are sealed with keys exported from the same HPKE context
(``export("sincere confidential v1 response key" | "... nonce")``), so only the client
that sealed the request can open them. A response is a sequence of frames: a flag
byte (1 on the last frame) and the AES-128-GCM ciphertext whose nonce is the base
nonce XOR the frame's sequence number and whose associated data binds that number
and the flag. A non-streamed body is one final frame; a stream is one SSE event
``data: <base64url(frame)>`` per upstream event, then an empty final frame. Reordered,
dropped, replayed or altered frames fail to open; a stream cut before its final frame
is reported as truncated. Frame sizes and counts are not padded: an observer learns
roughly how many tokens came back, as the declared metadata already tells.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pyhpke import AEADId, CipherSuite, KDFId, KEMId, KEMKeyInterface, OpenError

from sincere.core.errors import ConfigError
from sincere.serve.protocol import Kind as Kind  # re-exported: envelope users name the kind
from sincere.serve.protocol import ProtocolError

SUITE = CipherSuite.new(KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.AES128_GCM)
SUITE_NAME = "DHKEM(X25519,HKDF-SHA256)/HKDF-SHA256/AES-128-GCM"
CONTENT_TYPE = "application/sincere-sealed"
ENC_BYTES = 32  # X25519 encapsulated key
KEY_BYTES = 32
KEY_ID_CHARS = 16
INFO = b"sincere confidential v1 request"
_RESPONSE_KEY = b"sincere confidential v1 response key"
_RESPONSE_NONCE = b"sincere confidential v1 response nonce"
_FRAME_AAD = b"sincere confidential v1 frame"

KEY_HEADER = "x-sincere-sealed-key"
MODEL_HEADER = "x-sincere-model"
PROMPT_TOKENS_HEADER = "x-sincere-prompt-tokens"
MAX_TOKENS_HEADER = "x-sincere-max-tokens"
STREAM_HEADER = "x-sincere-stream"
SEALED_AT_HEADER = "x-sincere-sealed-at"
TIER_HEADER = "x-sincere-tier"
PRIORITY_HEADER = "x-sincere-priority"
USAGE_HEADER = "x-sincere-usage"  # response: "prompt_tokens=N, completion_tokens=M"
USAGE_EVENT = "sincere-usage"  # stream: a plain SSE event with the same figures as JSON
ERROR_EVENT = "sincere-error"  # stream: a plain SSE error event the gateway ended it with
DEADLINE_HEADER = "x-sincere-deadline-s"  # the client's deadline, a hint for the gateway
SEALED_HEADERS = (
    KEY_HEADER, MODEL_HEADER, PROMPT_TOKENS_HEADER, MAX_TOKENS_HEADER, STREAM_HEADER,
    SEALED_AT_HEADER, TIER_HEADER, PRIORITY_HEADER, DEADLINE_HEADER,
)  # fmt: skip
"""The request headers a gateway forwards with a sealed body (besides Content-Type)."""

MAX_DECLARED_TOKENS = 10_000_000


# -------------------------------------------------------------------------- keys
def key_id_of(public_bytes: bytes) -> str:
    """A public key's id: the first 16 hex characters of its SHA-256."""
    return hashlib.sha256(public_bytes).hexdigest()[:KEY_ID_CHARS]


@dataclass(frozen=True, slots=True)
class PinnedKey:
    """The engine side's public key as a client pins it."""

    public_bytes: bytes  # raw X25519 public key

    @property
    def key_id(self) -> str:
        return key_id_of(self.public_bytes)

    def kem_key(self) -> KEMKeyInterface:
        return SUITE.kem.deserialize_public_key(self.public_bytes)


@dataclass(frozen=True, slots=True)
class SealKeyPair:
    """The seal proxy's key pair (the private half never prints)."""

    private_bytes: bytes = field(repr=False)  # raw X25519 private key
    public_bytes: bytes

    @classmethod
    def generate(cls) -> SealKeyPair:
        """A fresh key pair from the operating system's random source."""
        private = X25519PrivateKey.generate()
        return cls(private.private_bytes_raw(), private.public_key().public_bytes_raw())

    @property
    def key_id(self) -> str:
        return key_id_of(self.public_bytes)

    @property
    def pinned(self) -> PinnedKey:
        return PinnedKey(self.public_bytes)

    def kem_key(self) -> KEMKeyInterface:
        return SUITE.kem.deserialize_private_key(self.private_bytes)


def write_keypair(pair: SealKeyPair, path: str | Path) -> None:
    """Write the key pair file (mode 0600); refuses to overwrite an existing file."""
    doc = _public_doc(pair.pinned) | {
        "format": "sincere-seal-keypair",
        "private_key": _b64(pair.private_bytes),
    }
    _write_new(Path(path), doc, 0o600)


def write_public_key(pinned: PinnedKey, path: str | Path) -> None:
    """Write the public key file a client pins (mode 0644); refuses to overwrite."""
    _write_new(Path(path), _public_doc(pinned), 0o644)


def load_keypair(path: str | Path) -> SealKeyPair:
    """Read a key pair file; a clear error naming the file and what is wrong."""
    doc = _read_doc(Path(path), "sincere-seal-keypair")
    pair = SealKeyPair(_key_bytes(doc, "private_key", path), _key_bytes(doc, "public_key", path))
    derived = X25519PrivateKey.from_private_bytes(pair.private_bytes).public_key()
    if derived.public_bytes_raw() != pair.public_bytes:
        raise ConfigError("public_key does not belong to private_key", where=path)
    return pair


def load_public_key(path: str | Path) -> PinnedKey:
    """Read a pinned public key file (a key pair file is accepted too)."""
    doc = _read_doc(Path(path), "sincere-seal-public-key", "sincere-seal-keypair")
    pinned = PinnedKey(_key_bytes(doc, "public_key", path))
    if doc.get("key_id") not in (None, pinned.key_id):
        raise ConfigError("key_id does not match public_key", where=path, value=doc.get("key_id"))
    return pinned


def _public_doc(pinned: PinnedKey) -> dict[str, Any]:
    return {
        "format": "sincere-seal-public-key",
        "version": 1,
        "suite": SUITE_NAME,
        "key_id": pinned.key_id,
        "public_key": _b64(pinned.public_bytes),
    }


def _write_new(path: Path, doc: dict[str, Any], mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise ConfigError("file exists; not overwriting a key", where=path) from None
    except OSError as exc:
        raise ConfigError(f"cannot write: {exc.strerror}", where=path) from None
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(doc, out, indent=1)
        out.write("\n")


def _read_doc(path: Path, *formats: str) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read key file: {exc.strerror}", where=path) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not JSON (line {exc.lineno}): {exc.msg}", where=path) from None
    if not isinstance(doc, dict) or doc.get("format") not in formats:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise ConfigError("not a sincere seal key file", where=path, value=got, allowed=formats)
    if doc.get("suite") != SUITE_NAME:
        raise ConfigError(
            "unsupported suite", where=path, value=doc.get("suite"), allowed=SUITE_NAME
        )
    return doc


def _key_bytes(doc: Mapping[str, Any], name: str, path: str | Path) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(str(doc[name]) + "==")
    except (KeyError, ValueError):
        raise ConfigError(f"{name} is missing or not base64", where=path) from None
    if len(raw) != KEY_BYTES:
        raise ConfigError(f"{name} has {len(raw)} bytes", where=path, allowed=f"{KEY_BYTES} bytes")
    return raw


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# ---------------------------------------------------------------- declared metadata
@dataclass(frozen=True, slots=True)
class Declared:
    """What a sealed request declares in plain headers."""

    kind: Kind  # "completion" or "chat": the endpoint
    key_id: str  # the recipient key it is sealed to
    model: str
    prompt_tokens: int  # an upper bound the seal proxy enforces
    max_tokens: int  # the answer's cap, enforced by the seal proxy
    stream: bool
    tier: str | None = None  # routing hint, not bound to the ciphertext
    priority: int | None = None  # routing hint, not bound to the ciphertext
    sealed_at: int | None = None  # Unix seconds it was sealed (bound); None: an old client's

    def aad(self) -> bytes:
        """The associated data binding the routed fields (and the sealing time) to the
        ciphertext; without a sealing time it is the first version's, unchanged."""
        fields = (self.kind, self.key_id, self.model, self.prompt_tokens, self.max_tokens)
        stamp = () if self.sealed_at is None else (self.sealed_at,)
        return "\n".join(map(str, (*fields, int(self.stream), *stamp))).encode()

    def headers(self) -> dict[str, str]:
        """The plain headers of a sealed request."""
        out = {
            "Content-Type": CONTENT_TYPE,
            KEY_HEADER: self.key_id,
            MODEL_HEADER: self.model,
            PROMPT_TOKENS_HEADER: str(self.prompt_tokens),
            MAX_TOKENS_HEADER: str(self.max_tokens),
            STREAM_HEADER: "1" if self.stream else "0",
        }
        if self.tier is not None:
            out[TIER_HEADER] = self.tier
        if self.priority is not None:
            out[PRIORITY_HEADER] = str(self.priority)
        if self.sealed_at is not None:
            out[SEALED_AT_HEADER] = str(self.sealed_at)
        return out


def is_sealed(headers: Mapping[str, str]) -> bool:
    """Whether a request's Content-Type says it is sealed."""
    value = headers.get("Content-Type") or headers.get("content-type") or ""
    return value.split(";")[0].strip().lower() == CONTENT_TYPE


def declared_from_headers(headers: Mapping[str, str], kind: Kind) -> Declared:
    """The declared metadata of a sealed request; 400 naming a missing or bad header."""
    model = _header(headers, MODEL_HEADER)
    if not model or len(model) > 256:
        raise _bad_header(MODEL_HEADER, model, "a model name (1-256 characters)")
    key_id = _header(headers, KEY_HEADER)
    if len(key_id) != KEY_ID_CHARS or any(c not in "0123456789abcdef" for c in key_id):
        raise _bad_header(KEY_HEADER, key_id, f"{KEY_ID_CHARS} lower-case hex characters")
    stream = _header(headers, STREAM_HEADER)
    if stream not in ("0", "1"):
        raise _bad_header(STREAM_HEADER, stream, "0 or 1")
    tier = _header(headers, TIER_HEADER) or None
    priority = _header(headers, PRIORITY_HEADER)
    sealed_at = _header(headers, SEALED_AT_HEADER)
    return Declared(
        kind=kind,
        key_id=key_id,
        model=model,
        prompt_tokens=_count(headers, PROMPT_TOKENS_HEADER, 0),
        max_tokens=_count(headers, MAX_TOKENS_HEADER, 1),
        stream=stream == "1",
        tier=tier,
        priority=None if not priority else _integer(PRIORITY_HEADER, priority),
        sealed_at=None if not sealed_at else _unix_seconds(sealed_at),
    )


def _unix_seconds(text: str) -> int:
    value = _integer(SEALED_AT_HEADER, text)
    if not 0 <= value < 1 << 40:
        raise _bad_header(SEALED_AT_HEADER, text, "whole Unix seconds")
    return value


def _header(headers: Mapping[str, str], name: str) -> str:
    return (headers.get(name) or "").strip()


def _count(headers: Mapping[str, str], name: str, low: int) -> int:
    value = _integer(name, _header(headers, name))
    if not low <= value <= MAX_DECLARED_TOKENS:
        raise _bad_header(name, str(value), f"an integer in [{low}, {MAX_DECLARED_TOKENS}]")
    return value


def _integer(name: str, text: str) -> int:
    if not text.lstrip("-").isdigit() or len(text) > 12:
        raise _bad_header(name, text, "an integer")
    return int(text)


def _bad_header(name: str, value: str, allowed: str) -> ProtocolError:
    shown = repr(value[:40] + ("..." if len(value) > 40 else ""))
    message = f"header {name}: got {shown}; allowed: {allowed}"
    return ProtocolError(400, message, param=name, code="bad_sealed_header")


# ------------------------------------------------------------------ sealing
class FrameSealer:
    """Seals the response frames of one request, numbering them from 0."""

    def __init__(self, key: bytes, base_nonce: bytes) -> None:
        self._aead = AESGCM(key)
        self._base = int.from_bytes(base_nonce, "big")
        self.num_frames = 0  # frames sealed so far
        self.finished = False  # the final frame was sealed

    def seal(self, plaintext: bytes, final: bool = False) -> bytes:
        """The next frame; nothing may follow a final one."""
        if self.finished:
            raise ValueError("the final frame was already sealed")
        flag = b"\x01" if final else b"\x00"
        seq = self.num_frames
        sealed = self._aead.encrypt(_nonce(self._base, seq), plaintext, _frame_aad(seq, flag))
        self.num_frames += 1
        self.finished = final
        return flag + sealed


class FrameOpener:
    """Opens the response frames of one request, in order, detecting any tampering."""

    def __init__(self, key: bytes, base_nonce: bytes) -> None:
        self._aead = AESGCM(key)
        self._base = int.from_bytes(base_nonce, "big")
        self.num_frames = 0
        self.finished = False

    def open(self, frame: bytes) -> bytes:
        """The next frame's plaintext; ``ValueError`` if it is not the expected frame."""
        if self.finished:
            raise ValueError("a frame arrived after the final frame")
        if len(frame) < 17 or frame[:1] not in (b"\x00", b"\x01"):
            raise ValueError(f"frame {self.num_frames} is malformed")
        flag, seq = frame[:1], self.num_frames
        try:
            plaintext = self._aead.decrypt(
                _nonce(self._base, seq), frame[1:], _frame_aad(seq, flag)
            )
        except InvalidTag:
            raise ValueError(
                f"frame {seq} does not open: altered, reordered, replayed or dropped"
            ) from None
        self.num_frames += 1
        self.finished = flag == b"\x01"
        return plaintext


def _nonce(base: int, seq: int) -> bytes:
    return (base ^ seq).to_bytes(12, "big")


def _frame_aad(seq: int, flag: bytes) -> bytes:
    return _FRAME_AAD + seq.to_bytes(8, "big") + flag


@dataclass(frozen=True, slots=True)
class SealedRequest:
    """A sealed request ready to send, and the means to open its response."""

    headers: dict[str, str]  # plain headers (declared metadata, Content-Type)
    body: bytes  # enc || ciphertext
    key: bytes = field(repr=False)  # response key, exported from the HPKE context
    base_nonce: bytes = field(repr=False)

    def opener(self) -> FrameOpener:
        """A fresh opener for this request's response frames."""
        return FrameOpener(self.key, self.base_nonce)


def seal_request(pinned: PinnedKey, declared: Declared, body: bytes) -> SealedRequest:
    """Seal a request body (the JSON an OpenAI endpoint takes) to the pinned key (with
    ``declared.sealed_at`` set: a seal proxy refuses a request without it)."""
    if declared.key_id != pinned.key_id:
        raise ValueError(f"declared key {declared.key_id} is not the pinned key {pinned.key_id}")
    enc, context = SUITE.create_sender_context(pinned.kem_key(), INFO)
    ciphertext = context.seal(body, declared.aad())
    key, nonce = context.export(_RESPONSE_KEY, 16), context.export(_RESPONSE_NONCE, 12)
    return SealedRequest(declared.headers(), enc + ciphertext, key, nonce)


def open_request(pair: SealKeyPair, declared: Declared, body: bytes) -> tuple[bytes, FrameSealer]:
    """The plaintext body and a sealer for the response; 4xx if it cannot be opened."""
    if declared.key_id != pair.key_id:
        raise ProtocolError(
            421,
            f"header {KEY_HEADER}: got {declared.key_id!r}; this proxy holds key {pair.key_id}",
            param=KEY_HEADER,
            code="wrong_sealed_key",
        )
    if len(body) <= ENC_BYTES + 16:
        raise ProtocolError(400, "sealed body is too short", code="bad_sealed_body")
    try:
        context = SUITE.create_recipient_context(body[:ENC_BYTES], pair.kem_key(), INFO)
        plaintext = context.open(body[ENC_BYTES:], declared.aad())
    except (OpenError, ValueError):
        raise ProtocolError(
            400,
            "sealed body does not open: wrong key, or the body or declared headers were altered",
            code="bad_sealed_body",
        ) from None
    key, nonce = context.export(_RESPONSE_KEY, 16), context.export(_RESPONSE_NONCE, 12)
    return plaintext, FrameSealer(key, nonce)


def sse_frame(frame: bytes) -> bytes:
    """A sealed frame as one SSE event."""
    return b"data: " + base64.urlsafe_b64encode(frame) + b"\n\n"


def frame_of_sse(data: str) -> bytes:
    """The sealed frame carried by an SSE ``data:`` payload."""
    return base64.urlsafe_b64decode(data.strip())


def usage_event(prompt_tokens: int, completion_tokens: int, source: str) -> bytes:
    """The plain SSE event telling a gateway what a stream used (counts only, no content)."""
    data = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
    return f"event: {USAGE_EVENT}\ndata: {json.dumps(data | {'source': source})}\n\n".encode()
