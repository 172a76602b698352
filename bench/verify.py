"""How fast identity documents verify, compared with the RSA-2048 check they cannot avoid.

Run: `.venv/bin/python bench/verify.py [--seconds N] [--rounds R] [--min-ratio X]`

Method: the two real AWS-signed samples (tests/joins/samples) are verified in turn by
`joins.iid.verify_document` against the built-in certificate store for N seconds; in the same
run, the bare `public_key.verify` of the same two signatures (PKCS#1 v1.5, SHA-256, over the
same signed attributes, keys already loaded) is timed for N seconds. Both are repeated R times,
alternating, and the best round of each is kept, which removes most noise from other processes.
The ratio documents/s over raw verifications/s is the share of the hard floor the verifier
reaches; the target is at least 0.20. Needs no Django.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cryptography  # noqa: E402
from cryptography.hazmat.backends.openssl.backend import backend  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import padding  # noqa: E402

from joins.iid import CertificateStore, decode_blob, verify_document  # noqa: E402
from joins.iid_cms import read_envelope  # noqa: E402

SAMPLES = (
    ROOT / "tests/joins/samples/teleport-instance1-us-west-2.rsa2048.p7.b64",
    ROOT / "tests/joins/samples/teleport-instance2-us-west-1.rsa2048.p7.b64",
)
TARGET_RATIO = 0.20
_BATCH = 100


def per_second(work: Callable[[], None], seconds: float) -> float:
    """Calls of `work` per second over about `seconds` of wall time (batches of 100 calls)."""
    calls = 0
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        for _ in range(_BATCH):
            work()
        calls += _BATCH
        now = time.perf_counter()
        if now >= deadline:
            return calls / (now - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per round and side")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per side")
    parser.add_argument(
        "--min-ratio", type=float, default=None, help="exit 1 if the ratio is below this"
    )
    args = parser.parse_args(argv)

    store = CertificateStore.load()
    texts = [path.read_text() for path in SAMPLES]
    for text in texts:
        verify_document(text, store)  # both must verify before anything is timed

    raw_checks = []
    for text in texts:
        envelope = read_envelope(decode_blob(text))
        document = verify_document(text, store)
        key = store.trusted(document.region).public_key  # type: ignore[union-attr]
        signed = b"\x31" + envelope.signed_attributes[1:]
        raw_checks.append((key, envelope.signature, signed))

    turn = [0]

    def one_document() -> None:
        turn[0] ^= 1
        verify_document(texts[turn[0]], store)

    def one_raw_verify() -> None:
        turn[0] ^= 1
        key, signature, signed = raw_checks[turn[0]]
        key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())

    documents: list[float] = []
    raw: list[float] = []
    for _ in range(args.rounds):
        raw.append(per_second(one_raw_verify, args.seconds))
        documents.append(per_second(one_document, args.seconds))

    best_documents, best_raw = max(documents), max(raw)
    ratio = best_documents / best_raw
    median_ratio = statistics.median(documents) / statistics.median(raw)
    print("joinadmin identity-document verification benchmark")
    print(
        f"  python {platform.python_version()}, cryptography {cryptography.__version__}, "
        f"{backend.openssl_version_text()}, {platform.machine()}"
    )
    print(
        f"  method: 2 real AWS samples alternated; {args.rounds} rounds x {args.seconds:g} s "
        f"per side, alternating; best round kept"
    )
    print(
        f"  raw RSA-2048 public_key.verify : {best_raw:10,.0f} /s  "
        f"({1e6 / best_raw:6.1f} us each; rounds {', '.join(f'{r:,.0f}' for r in raw)})"
    )
    print(
        f"  verify_document                : {best_documents:10,.0f} /s  "
        f"({1e6 / best_documents:6.1f} us each; rounds "
        f"{', '.join(f'{d:,.0f}' for d in documents)})"
    )
    print(
        f"  ratio documents / raw verifies : {ratio:.3f} (median of rounds {median_ratio:.3f}; "
        f"target >= {TARGET_RATIO:.2f})"
    )
    if args.min_ratio is not None and ratio < args.min_ratio:
        print(f"  FAIL: ratio below {args.min_ratio:.2f}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
