"""Times one PyTorch training step (forward + backward + Adam) of the model recur's
benchmarks use, for a same-machine comparison (scripts/peers.sh runs it).

Usage: python3 scripts/ref/torch_step.py B E H L T [steps]
Prints one JSON line: median step seconds over `steps` steps after one warm-up step,
and peak RSS.
"""

import json
import resource
import statistics
import sys
import time

import torch

B, E, H, L, T = (int(x) for x in sys.argv[1:6])
steps = int(sys.argv[6]) if len(sys.argv) > 6 else 5
V = 256
torch.manual_seed(0)


class LM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(V, E)
        self.lstm = torch.nn.LSTM(E, H, num_layers=L)
        self.fc = torch.nn.Linear(H, V)

    def forward(self, x, state):
        out, state = self.lstm(self.embedding(x), state)
        return self.fc(out), state


model = LM()
opt = torch.optim.Adam(model.parameters(), lr=2e-3)
data = torch.randint(0, V, (T + 1, B))
state = None
times = []
for i in range(steps + 1):
    t0 = time.perf_counter()
    logits, state = model(data[:-1], state)
    state = tuple(s.detach() for s in state)
    loss = torch.nn.functional.cross_entropy(logits.reshape(T * B, V), data[1:].reshape(T * B))
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    if i > 0:
        times.append(time.perf_counter() - t0)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({
    "framework": f"torch {torch.__version__}", "threads": torch.get_num_threads(),
    "step_s": statistics.median(times), "peak_rss_bytes": rss,
}))
