"""Regenerates tests/data/torch_lstm2.safetensors: a PyTorch reference for recur.

A 2-layer nn.LSTM language model (nn.Embedding -> nn.LSTM -> nn.Linear, mean
cross-entropy at every step) with PyTorch's default initialisation from seed 0, one
batch of tokens [T, B], a non-zero initial state (h0, c0), and what PyTorch computes
from them: the loss, every parameter's gradient, and the final state.

Tensors in the file:
  weights under PyTorch's state-dict names (embedding.weight, lstm.weight_ih_l0, ...),
  input, target   int64 [T, B]
  h0, c0          float32 [L, B, H]
  loss            float32 []
  grad.<name>     float32, one per parameter
  hn, cn          float32 [L, B, H]

Run: python3 scripts/ref/torch_fixture.py   (needs torch and safetensors)
"""

import pathlib

import torch
from safetensors.torch import save_file

V, E, H, L, T, B = 11, 5, 6, 2, 9, 3

torch.manual_seed(0)
emb = torch.nn.Embedding(V, E)
lstm = torch.nn.LSTM(E, H, num_layers=L)
fc = torch.nn.Linear(H, V)
inp = torch.randint(0, V, (T, B))
tgt = torch.randint(0, V, (T, B))
h0 = 0.5 * torch.randn(L, B, H)
c0 = 0.5 * torch.randn(L, B, H)

out, (hn, cn) = lstm(emb(inp), (h0, c0))
logits = fc(out)
loss = torch.nn.functional.cross_entropy(logits.reshape(T * B, V), tgt.reshape(T * B))
loss.backward()

tensors = {}
for prefix, module in (("embedding", emb), ("lstm", lstm), ("fc", fc)):
    for name, p in module.named_parameters():
        tensors[f"{prefix}.{name}"] = p.detach().clone()
        tensors[f"grad.{prefix}.{name}"] = p.grad.detach().clone()
tensors.update(
    input=inp, target=tgt, h0=h0, c0=c0, loss=loss.detach().reshape(()),
    hn=hn.detach().clone(), cn=cn.detach().clone(),
)
path = pathlib.Path(__file__).resolve().parents[2] / "tests" / "data" / "torch_lstm2.safetensors"
save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
print(f"wrote {path}: loss {loss.item():.6f} (torch {torch.__version__})")
