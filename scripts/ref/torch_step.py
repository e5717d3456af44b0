"""Times one PyTorch training step (forward + backward + clipping + Adam) of the models
recur's benchmarks use, for a same-machine comparison (scripts/peers.sh runs it).

Usage: python3 scripts/ref/torch_step.py B E H L T [steps] [cell] [features] [policy] [warmup]
  cell      lstm (default) or gru: nn.LSTM / nn.GRU
  features  0 (default): a token language model, nn.Embedding(256, E) -> cell ->
            nn.Linear(H, 256), cross-entropy at every step; N > 0: N f32 features per
            step straight into the cell -> nn.Linear(H, N), nn.MSELoss against the next
            row
  policy    none (default): keep every activation; sqrt: torch.utils.checkpoint over
            chunks of ceil(sqrt(T)) steps, each chunk's embedding, cell, head and loss
            inside its checkpoint (only the chunk's tokens and entry state are kept;
            the chunk is recomputed in backward), as recur's checkpointing does;
            sqrt-cells: the cell alone checkpointed per chunk, the embedding and head
            run over the whole window outside (what this script did before: T·B·V
            logits live)
  warmup    untimed steps first (default 1)

Environment: TORCH_STEP_DATA=file.npy takes a feature model's windows from that [rows, N]
f32 series (B windows at random offsets, the same every step) instead of N(0, 1)
noise; TORCH_STEP_FLUSH=1 calls torch.set_flush_denormal(True) first.

Prints one JSON line: median step seconds over `steps` steps after the warm-up steps,
and the process's peak RSS.
"""

import json
import math
import os
import resource
import statistics
import sys
import time

import torch
import torch.utils.checkpoint

B, E, H, L, T = (int(x) for x in sys.argv[1:6])
steps = int(sys.argv[6]) if len(sys.argv) > 6 else 5
CELL = sys.argv[7] if len(sys.argv) > 7 else "lstm"
N = int(sys.argv[8]) if len(sys.argv) > 8 else 0
POLICY = sys.argv[9] if len(sys.argv) > 9 else "none"
WARMUP = int(sys.argv[10]) if len(sys.argv) > 10 else 1
if POLICY not in ("none", "sqrt", "sqrt-cells"):
    sys.exit(f"torch_step.py: unknown policy '{POLICY}' (none, sqrt, sqrt-cells)")
V = 256
torch.manual_seed(0)
if os.environ.get("TORCH_STEP_FLUSH") == "1":
    torch.set_flush_denormal(True)


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        rnn = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[CELL]
        if N == 0:
            self.embedding = torch.nn.Embedding(V, E)
        self.rnn = rnn(N or E, H, num_layers=L)
        self.fc = torch.nn.Linear(H, N or V)

    def chunk(self, inputs, targets, *state):
        """The summed loss of one chunk, and its exit state: all of it recomputed in
        backward under the sqrt policy."""
        x = self.embedding(inputs) if N == 0 else inputs
        out, st = self.rnn(x, state if CELL == "lstm" else state[0])
        y = self.fc(out)
        if N == 0:
            loss = torch.nn.functional.cross_entropy(
                y.reshape(-1, V), targets.reshape(-1), reduction="sum")
        else:
            loss = torch.nn.functional.mse_loss(y, targets, reduction="sum")
        return (loss,) + (tuple(st) if CELL == "lstm" else (st,))

    def checkpointed(self, data, state):
        """The window's mean loss and exit state, one checkpoint per chunk."""
        chunk = math.ceil(math.sqrt(T))
        st = tuple(state) if CELL == "lstm" else (state,)
        total = 0.0
        for s in range(0, T, chunk):
            e = min(s + chunk, T)
            res = torch.utils.checkpoint.checkpoint(
                self.chunk, data[s:e], data[s + 1:e + 1], *st, use_reentrant=False)
            total = total + res[0]
            st = res[1:]
        count = T * B * (N or 1)
        return total / count, (st if CELL == "lstm" else st[0])

    def cells(self, x, state):
        if POLICY != "sqrt-cells":
            return self.rnn(x, state)
        chunk = math.ceil(math.sqrt(T))
        outs = []
        for s in range(0, T, chunk):
            out, state = torch.utils.checkpoint.checkpoint(
                self.rnn, x[s:s + chunk], state, use_reentrant=False)
            outs.append(out)
        return torch.cat(outs), state

    def forward(self, x, state):
        if N == 0:
            x = self.embedding(x)
        out, state = self.cells(x, state)
        return self.fc(out), state


def zero_state():
    h = torch.zeros(L, B, H)
    return (h, torch.zeros(L, B, H)) if CELL == "lstm" else h


def detach(state):
    return tuple(s.detach() for s in state) if CELL == "lstm" else state.detach()


model = Model()
opt = torch.optim.Adam(model.parameters(), lr=2e-3)
if N == 0:
    data = torch.randint(0, V, (T + 1, B))
elif os.environ.get("TORCH_STEP_DATA"):
    import numpy as np
    # Mapped, not read: only the B windows are copied into this process.
    series = np.load(os.environ["TORCH_STEP_DATA"], mmap_mode="r")
    if series.ndim != 2 or series.shape[1] != N:
        sys.exit(f"torch_step.py: the data is {series.shape}, not [rows, {N}]")
    if series.shape[0] < T + 2:
        sys.exit(f"torch_step.py: the data has {series.shape[0]} rows, fewer than T + 2")
    starts = torch.randint(0, series.shape[0] - T - 1, (B,))
    data = torch.stack([torch.from_numpy(np.array(series[s:s + T + 1], dtype=np.float32))
                        for s in starts.tolist()], dim=1)
else:
    data = torch.randn(T + 1, B, N)
state = zero_state()
times = []
for i in range(steps + WARMUP):
    t0 = time.perf_counter()
    if POLICY == "sqrt":
        loss, state = model.checkpointed(data, state)
        state = detach(state)
    else:
        out, state = model(data[:-1], state)
        state = detach(state)
        if N == 0:
            loss = torch.nn.functional.cross_entropy(out.reshape(T * B, V), data[1:].reshape(T * B))
        else:
            loss = torch.nn.functional.mse_loss(out, data[1:])
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    if i >= WARMUP:
        times.append(time.perf_counter() - t0)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({
    "framework": f"torch {torch.__version__}", "threads": torch.get_num_threads(),
    "cell": CELL, "features": N, "policy": POLICY,
    "flush_denormal": os.environ.get("TORCH_STEP_FLUSH") == "1",
    "step_s": statistics.median(times), "peak_rss_bytes": rss,
}))
