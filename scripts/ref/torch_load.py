"""Runs docs/FORMATS.md's PyTorch loader on weights recur wrote, checks it against recur,
and writes the fixture tests/data/torch_load/ that `cargo test` (tests/it/torch_load.rs)
checks recur's outputs against, without PyTorch.

Steps:
  1. The Python block of docs/FORMATS.md between `<!-- torch_load: begin -->` and
     `<!-- torch_load: end -->` is executed as it is: the doc is what is tested. It
     defines load_recur(path) -> (forward, metadata).
  2. In a temporary directory, recur (the binary given by --recur, else $RECUR, else
     $CARGO_TARGET_DIR/debug/recur, else target/debug/recur) trains two tiny models:
       lm       a character LSTM language model: `recur data text --vocab chars`, then
                `recur train --hidden 8 --embed 5 --layers 2 --forget-bias 1`;
       regress  a GRU regression over a standardised 2-column series: `recur data csv
                --standardize`, then `recur train --cell gru --hidden 6`.
  3. Each model.safetensors is loaded with the doc's load_recur and run on a fixed
     input (T 7, B 3: tokens drawn from the vocabulary, or randn features; seed 0 / 1)
     with a fixed target. `recur grads` computes the loss of the same weights and
     batch; the two losses must agree within 1e-5 relative, and the metadata's
     vocabulary or norm must be the data's.
  4. Per case, tests/data/torch_load/<case>/ gets model.safetensors (recur's weights,
     copied as written) and torch.safetensors: input (int64 [T, B] or float32
     [T, B, N]), target (int64 [T, B] or float32 [T, B, K]), output (float32 [T, B, K],
     PyTorch's forward from a zero state) and loss (float32 scalar, PyTorch's).

Run: cargo build && python3 scripts/ref/torch_load.py [--recur PATH]
     (needs torch, safetensors and numpy). Training is deterministic per seed, so a
     rerun on this machine writes the same files; another BLAS may round differently,
     which is fine: weights and outputs are regenerated together.
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "FORMATS.md"
OUT = ROOT / "tests" / "data" / "torch_load"
BEGIN, END = "<!-- torch_load: begin -->", "<!-- torch_load: end -->"
T, B = 7, 3


def doc_snippet():
    """The Python block between the markers of docs/FORMATS.md."""
    text = DOC.read_text(encoding="utf-8")
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        sys.exit(f"{DOC}: expected one {BEGIN} and one {END}")
    block = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    if not (block.startswith("```python\n") and block.endswith("```")):
        sys.exit(f"{DOC}: the markers must enclose one ```python block")
    return block[len("```python\n"):-len("```")]


def find_recur(given):
    candidates = [given, os.environ.get("RECUR")]
    if os.environ.get("CARGO_TARGET_DIR"):
        candidates.append(os.path.join(os.environ["CARGO_TARGET_DIR"], "debug", "recur"))
    candidates.append(str(ROOT / "target" / "debug" / "recur"))
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    sys.exit("no recur binary: build it (cargo build) or give --recur PATH")


def run(recur, args, cwd):
    done = subprocess.run([recur, *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"recur {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def train_lm(recur, d):
    text = "the quick brown fox jumps over the lazy dog. " * 60
    (d / "c.txt").write_text(text, encoding="utf-8")
    run(recur, ["data", "text", "c.txt", "c.npy", "--vocab", "chars"], d)
    run(recur, ["train", "--data", "c.npy", "--hidden", "8", "--embed", "5", "--layers", "2",
                "--forget-bias", "1", "--batch", "4", "--window", "16", "--steps", "20",
                "--seed", "0", "--out", "lm"], d)
    return d / "lm" / "model.safetensors", (d / "c.vocab.json").read_text(encoding="utf-8")


def train_regress(recur, d):
    rows = ["a,b"] + [f"{50 + 5 * torch.sin(torch.tensor(i * 0.1)).item():.4f},"
                      f"{1000 + 80 * torch.cos(torch.tensor(i * 0.1)).item():.4f}"
                      for i in range(1500)]
    (d / "s.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    run(recur, ["data", "csv", "s.csv", "s.npy", "--standardize"], d)
    run(recur, ["train", "--data", "s.npy", "--cell", "gru", "--hidden", "6", "--batch", "4",
                "--window", "16", "--steps", "20", "--lr", "0.01", "--seed", "0", "--out",
                "regress"], d)
    return d / "regress" / "model.safetensors", (d / "s.norm.json").read_text(encoding="utf-8")


def batch(meta, seed):
    """A fixed input and target for the model `meta` describes."""
    g = torch.Generator().manual_seed(seed)
    K = int(meta["outputs"])
    if meta["input"] == "tokens":
        V = int(meta["vocab"])
        return (torch.randint(0, V, (T, B), generator=g),
                torch.randint(0, K, (T, B), generator=g))
    N = int(meta["features"])
    return torch.randn(T, B, N, generator=g), torch.randn(T, B, K, generator=g)


def check_case(recur, load_recur, name, weights, side, seed, work):
    forward, meta = load_recur(str(weights))
    assert meta["format"] == "recur" and meta["layout"] == "time-major", meta
    key = "vocabulary" if meta["input"] == "tokens" else "norm"
    if json.loads(meta[key]) != json.loads(side):
        sys.exit(f"{name}: the metadata's {key} is not the data's")
    x, y = batch(meta, seed)
    with torch.no_grad():
        out = forward(x)
    K = int(meta["outputs"])
    assert out.shape == (T, B, K), out.shape
    if meta["head"] == "lm":
        loss = F.cross_entropy(out.reshape(-1, K), y.reshape(-1))
    else:
        loss = F.mse_loss(out, y)
    b = work / f"{name}.batch.safetensors"
    g = work / f"{name}.grads.safetensors"
    save_file({"input": x.contiguous(), "target": y.contiguous()}, str(b))
    run(recur, ["grads", "--weights", str(weights), "--batch", str(b), "--out", str(g)], work)
    theirs = load_file(str(g))["loss"].item()
    rel = abs(theirs - loss.item()) / abs(loss.item())
    print(f"{name}: {meta['cell']} {meta['input']} H{meta['hidden']} L{meta['layers']} "
          f"{meta['head']} K{K}: PyTorch loss {loss.item():.7f}, recur {theirs:.7f} "
          f"(relative difference {rel:.1e})")
    if rel > 1e-5:
        sys.exit(f"{name}: PyTorch and recur disagree")
    dest = OUT / name
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(weights, dest / "model.safetensors")
    save_file({"input": x.contiguous(), "target": y.contiguous(), "output": out.contiguous(),
               "loss": loss.reshape(())}, str(dest / "torch.safetensors"))
    print(f"wrote {dest}/model.safetensors and torch.safetensors")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recur", help="the recur binary")
    recur = find_recur(ap.parse_args().recur)
    scope = {}
    exec(compile(doc_snippet(), f"{DOC}:torch_load", "exec"), scope)
    load_recur = scope["load_recur"]
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        for seed, (name, make) in enumerate((("lm", train_lm), ("regress", train_regress))):
            weights, side = make(recur, work)
            check_case(recur, load_recur, name, weights, side, seed, work)
    print(f"torch {torch.__version__}")


if __name__ == "__main__":
    main()
