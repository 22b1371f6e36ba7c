"""What tokenising InferenceX's random-token prompts costs a server, per prompt token.

InferenceX's client (``utils/bench_serving/benchmark_serving.py``, ``--dataset-name
random``) builds each prompt from consecutive token ids starting at a random offset,
decodes them to text and sends the text; the server tokenises it again. A cost per prompt
token that only such text pays would show in TTFT and not in runs of ordinary text. This
times a byte-level BPE tokeniser of 131k tokens (Mistral's Tekken ranks, rebuilt as a
Hugging Face ``tokenizers`` BPE configured the way Llama-3's ``tokenizer.json`` is: the
ranks' regex split, then byte-level pieces, merges in rank order) on

* prompts built as that client builds them (1,024 and 8,192 ids, eight prompts each);
* ordinary text (the design notes beside the checkout, ~8k tokens);
* uniformly random ids (8,192),

and prints microseconds per token: the best of five encodes of each prompt, the median
over prompts. One thread, as the server's tokeniser call runs.

The ranks come from the ``mistral_common`` wheel (a package on PyPI, not a dependency of
this project; nothing is fetched at run time)::

    pip download --no-deps mistral_common -d /tmp/mc
    unzip -o /tmp/mc/mistral_common-*.whl 'mistral_common/data/tekken_240911.json' -d /tmp/mc
    python benchmarks/tokenize_random_prompts.py /tmp/mc/mistral_common/data/tekken_240911.json
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import statistics
import time
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

ROOT = Path(__file__).resolve().parents[1]


def byte_symbols() -> dict[int, str]:
    """Byte -> the printable character byte-level BPE writes it as (printable Latin-1
    bytes stand for themselves, the others take code points from 256 up, in order)."""
    kept = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    extra = (b for b in range(256) if b not in kept)
    table = {b: chr(b) for b in kept}
    table.update({b: chr(256 + i) for i, b in enumerate(extra)})
    return table


def build_tokenizer(ranks_file: Path) -> tuple[Tokenizer, int]:
    """The Hugging Face BPE of a Tekken ranks file, and its vocabulary size (no specials)."""
    doc = json.loads(ranks_file.read_text())
    config = doc["config"]
    size = config["default_vocab_size"] - config["default_num_special_tokens"]
    pieces = [base64.b64decode(v["token_bytes"]) for v in doc["vocab"][:size]]
    symbols = byte_symbols()

    def spell(piece: bytes) -> str:
        return "".join(symbols[b] for b in piece)

    rank = {piece: i for i, piece in enumerate(pieces)}
    merges: list[tuple[int, str, str]] = []
    for piece, r in rank.items():
        if len(piece) < 2:
            continue
        splits = [
            (max(rank[piece[:i]], rank[piece[i:]]), piece[:i], piece[i:])
            for i in range(1, len(piece))
            if piece[:i] in rank and piece[i:] in rank
        ]
        if splits:
            _, left, right = min(splits)
            merges.append((r, spell(left), spell(right)))
    merges.sort()
    vocab = {spell(piece): i for i, piece in enumerate(pieces)}
    bpe = models.BPE(vocab=vocab, merges=[(a, b) for _, a, b in merges], ignore_merges=True)
    tokenizer = Tokenizer(bpe)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(config["pattern"]), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer, size


def us_per_token(tokenizer: Tokenizer, text: str, repeats: int = 5) -> float:
    """Microseconds per token of encoding ``text``: the best of ``repeats``."""
    tokens = len(tokenizer.encode(text).ids)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        tokenizer.encode(text)
        best = min(best, time.perf_counter() - started)
    return best / tokens * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ranks", type=Path, help="a Tekken ranks file (see the docstring)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    tokenizer, size = build_tokenizer(args.ranks)
    rng = random.Random(args.seed)
    for length in (1024, 8192):
        costs = []
        for i in range(8):
            offset = rng.randrange(size)
            text = tokenizer.decode([(offset + i + j) % size for j in range(length)])
            costs.append(us_per_token(tokenizer, text))
        print(
            f"InferenceX random prompt, {length} ids: {statistics.median(costs):.2f} us/token "
            f"(8 prompts: {min(costs):.2f}-{max(costs):.2f})"
        )
    prose = (ROOT.parent / "shared" / "DESIGN.md").read_text()
    print(f"ordinary text: {us_per_token(tokenizer, prose[:40_000]):.2f} us/token")
    noise = tokenizer.decode([rng.randrange(size) for _ in range(8192)])
    print(f"uniformly random ids, 8192: {us_per_token(tokenizer, noise):.2f} us/token")


if __name__ == "__main__":
    main()
