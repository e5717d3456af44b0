"""Regenerates the PyTorch reference fixtures in tests/data/ for recur.

Each fixture is one model with PyTorch's default initialisation from a fixed seed
(torch.manual_seed per case), one batch, a non-zero initial state, and what PyTorch
computes from them in float32: the loss, every parameter's gradient and the final state.

Cases (T steps, B rows, H hidden, L layers; V vocabulary, E embedding width, N input
features, K regression outputs, C classes):

  torch_lstm2.safetensors         seed 0, T9 B3 V11 E5 H6 L2
      nn.Embedding(V, E) -> nn.LSTM(E, H, 2 layers) -> nn.Linear(H, V);
      mean cross-entropy over all T*B positions.
  torch_gru_lm.safetensors        seed 1, T9 B3 V11 E5 H6 L2
      nn.Embedding(V, E) -> nn.GRU(E, H, 2 layers) -> nn.Linear(H, V);
      cross-entropy averaged over the positions with mask = 1 only.
  torch_lstm_regress.safetensors  seed 2, T9 B3 N4 H6 L2 K3
      features -> nn.LSTM(N, H, 2 layers) -> nn.Linear(H, K); nn.MSELoss() (mean over
      T*B*K), no mask.
  torch_gru_regress.safetensors   seed 3, T9 B3 N4 H6 L1 K3
      features -> nn.GRU(N, H, 1 layer) -> nn.Linear(H, K); squared error summed over
      the positions with mask = 1, divided by (their count * K).
  torch_gru_classify.safetensors  seed 4, T9 B3 N4 H6 L2 C4
      features -> nn.GRU(N, H, 2 layers) -> nn.Linear(H, C); row b has valid steps
      0..len_b-1 (lengths 9, 5, 7: a prefix mask) and is predicted from the top layer's
      output at step len_b-1; cross-entropy mean over the B rows. The recurrence still
      runs over all T steps, so hn is the state after step T-1.
  torch_lstm_classify.safetensors seed 5, T9 B3 V11 E5 H6 L1 C4
      nn.Embedding(V, E) -> nn.LSTM(E, H, 1 layer) -> nn.Linear(H, C); each row is
      predicted from step T-1; cross-entropy mean over the B rows, no mask.
  torch_peephole_lm.safetensors   seed 6, T9 B3 V11 E5 H6 L2
      nn.Embedding(V, E) -> PeepholeLSTM(E, H, 2 layers) -> nn.Linear(H, V), where
      PeepholeLSTM is the module docs/cells.md gives (its code block is run as written,
      every tensor drawn U(-1/sqrt(H), 1/sqrt(H)) as nn.LSTM's); mean cross-entropy over
      the positions with mask = 1.
  torch_lstmp_lm.safetensors      seed 7, T9 B3 V11 E5 H6 P4 L2
      nn.Embedding(V, E) -> nn.LSTM(E, H, 2 layers, proj_size=P) -> nn.Linear(P, V);
      cross-entropy averaged over the positions with mask = 1 (h0, hn are [L, B, P];
      lstm.weight_hh_l{k} is [4H, P], lstm.weight_hr_l{k} [P, H]).
  torch_lstm_dropout.safetensors  seed 8, T9 B3 V11 E5 H6 L2, dropout p = 0.4
      nn.Embedding(V, E) -> nn.LSTM(E, H) -> dropout -> nn.LSTM(H, H) -> nn.Linear(H, V),
      i.e. nn.LSTM(E, H, 2 layers, dropout=p) in training mode with recur's masks: layer
      0's output is multiplied by mask / (1 - p), the mask being docs/cells.md's
      (keep_mask below, a third implementation of it: seed 5, round 0, layer 1);
      mean cross-entropy over the positions with mask = 1. The two one-layer modules'
      tensors are saved as layers 0 and 1 of `lstm.`; dropout_p, dropout_seed hold p
      and the seed.
  torch_bigru_classify.safetensors  seed 9, T9 B3 N4 H6 L2 C4
      features -> nn.GRU(N, H, 2 layers, bidirectional=True) over packed sequences of
      lengths 9, 5, 7 -> nn.Linear(2H, C) of torch.cat([h_n[-2], h_n[-1]]): the top
      layer's forward state at each row's last step and its reverse state at step 0;
      cross-entropy mean over the rows. h0's reverse entries are zero (recur's reverse
      directions start from zero); `reset` marks each shorter row's first padding step
      and `mask` each row's last step; no hn (PyTorch's stops at each row's end).
  torch_bilstmp_tagger.safetensors  seed 10, T9 B3 V11 E5 H6 P4 L2 K5
      nn.Embedding(V, E) -> nn.LSTM(E, H, 2 layers, bidirectional=True, proj_size=P) ->
      nn.Linear(2P, K): a tagger, one of K labels per step (target), cross-entropy over
      the positions with mask = 1; reverse h0, c0 entries zero; hn, cn [2L, B, ·] in
      PyTorch's order (the reverse state is after step 0).

Tensors in every file:
  weights         float32, PyTorch state-dict names with module prefixes:
                  embedding.weight [V, E] (token input only),
                  lstm.* / gru.* (weight_ih_l{k} [G*H, I], weight_hh_l{k} [G*H, H],
                  bias_ih_l{k} [G*H], bias_hh_l{k} [G*H]; G = 4 for LSTM, 3 for GRU),
                  fc.weight [K or V or C, H], fc.bias [K or V or C]
  input           int64 [T, B] tokens, or float32 [T, B, N] features (time-major)
  target          int64 [T, B] next tokens (lm), or float32 [T, B, K] values (regress)
  label           int64 [B] one class per row (classify; instead of target)
  mask            uint8 [T, B], 1 = the position counts (only in the masked cases)
  h0, c0          float32 [L, B, H] initial state, 0.5 * randn (c0 for LSTM only)
  loss            float32 [] (scalar)
  grad.<name>     float32, one per parameter, same shape as the parameter
  hn, cn          float32 [L, B, H] state after step T-1 (cn for LSTM only)

Run: python3 scripts/ref/torch_fixture.py [CASE ...]   (needs torch and safetensors)
  CASE is a file stem (e.g. torch_gru_lm); without one, every case is written, except
  that an existing torch_lstm2.safetensors is kept: that file was made on another
  machine, and this torch/MKL build reproduces it only to 1 ulp (same weights and
  inputs; hn, cn and some gradients differ in the last bit), so it is rewritten only
  when named explicitly.
"""

import pathlib
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

DATA = pathlib.Path(__file__).resolve().parents[2] / "tests" / "data"
T, B, H = 9, 3, 6
V, E = 11, 5  # token input
N, K, C = 4, 3, 4  # features, regression outputs, classes


def param_tensors(modules):
    """Weights and their gradients under state-dict names, e.g. lstm.weight_ih_l0."""
    tensors = {}
    for prefix, module in modules:
        for name, p in module.named_parameters():
            tensors[f"{prefix}.{name}"] = p.detach().clone()
            tensors[f"grad.{prefix}.{name}"] = p.grad.detach().clone()
    return tensors


def initial_state(rnn, layers):
    """Non-zero initial state: (h0, c0) for an LSTM, h0 for a GRU (drawn in that order)."""
    h0 = 0.5 * torch.randn(layers, B, H)
    if isinstance(rnn, torch.nn.LSTM):
        return h0, 0.5 * torch.randn(layers, B, H)
    return h0


def final_state(hx):
    """{'hn'} or {'hn', 'cn'} from the recurrent module's returned state."""
    if isinstance(hx, tuple):
        return dict(hn=hx[0].detach().clone(), cn=hx[1].detach().clone())
    return dict(hn=hx.detach().clone())


def state_tensors(hx0):
    if isinstance(hx0, tuple):
        return dict(h0=hx0[0], c0=hx0[1])
    return dict(h0=hx0)


def write(file, tensors, loss):
    path = DATA / file
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    print(f"wrote {path}: loss {loss.item():.6f} (torch {torch.__version__})")


def run(file, modules, rnn, x, hx0, loss_fn, data):
    """Forward from hx0, loss_fn(out) -> loss, backward, and write everything."""
    out, hn = rnn(x, hx0)
    loss = loss_fn(out)
    loss.backward()
    tensors = param_tensors(modules)
    tensors.update(data, **state_tensors(hx0), loss=loss.detach().reshape(()), **final_state(hn))
    write(file, tensors, loss)


def prefix_mask(lengths):
    """uint8 [T, B]: row b valid at steps 0..lengths[b]-1."""
    return (torch.arange(T)[:, None] < torch.tensor(lengths)[None, :]).to(torch.uint8)


def masked_ce(logits, tgt, mask):
    """Cross-entropy of [T, B, C] logits against [T, B] targets, averaged over the
    positions with mask = 1."""
    ce = F.cross_entropy(logits.reshape(T * B, -1), tgt.reshape(T * B), reduction="none")
    m = mask.reshape(T * B).float()
    return (ce * m).sum() / m.sum()


def random_mask(p_zero):
    """uint8 [T, B] with some zeros and some ones."""
    mask = (torch.rand(T, B) >= p_zero).to(torch.uint8)
    assert 0 < int(mask.sum()) < T * B, "mask needs both kinds of positions"
    return mask


def lstm2():
    # Kept exactly as the original single-case script (draw order included): the file
    # must stay bit-for-bit identical.
    L = 2
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
    loss = F.cross_entropy(logits.reshape(T * B, V), tgt.reshape(T * B))
    loss.backward()

    tensors = param_tensors((("embedding", emb), ("lstm", lstm), ("fc", fc)))
    tensors.update(
        input=inp, target=tgt, h0=h0, c0=c0, loss=loss.detach().reshape(()),
        hn=hn.detach().clone(), cn=cn.detach().clone(),
    )
    write("torch_lstm2.safetensors", tensors, loss)


def gru_lm():
    torch.manual_seed(1)
    emb, gru, fc = torch.nn.Embedding(V, E), torch.nn.GRU(E, H, num_layers=2), torch.nn.Linear(H, V)
    inp = torch.randint(0, V, (T, B))
    tgt = torch.randint(0, V, (T, B))
    mask = random_mask(0.3)
    hx0 = initial_state(gru, 2)

    def loss_fn(out):
        return masked_ce(fc(out), tgt, mask)

    run("torch_gru_lm.safetensors", (("embedding", emb), ("gru", gru), ("fc", fc)), gru,
        emb(inp), hx0, loss_fn, dict(input=inp, target=tgt, mask=mask))


def lstm_regress():
    torch.manual_seed(2)
    lstm, fc = torch.nn.LSTM(N, H, num_layers=2), torch.nn.Linear(H, K)
    inp = torch.randn(T, B, N)
    tgt = torch.randn(T, B, K)
    hx0 = initial_state(lstm, 2)
    run("torch_lstm_regress.safetensors", (("lstm", lstm), ("fc", fc)), lstm, inp, hx0,
        lambda out: torch.nn.MSELoss()(fc(out), tgt), dict(input=inp, target=tgt))


def gru_regress():
    torch.manual_seed(3)
    gru, fc = torch.nn.GRU(N, H, num_layers=1), torch.nn.Linear(H, K)
    inp = torch.randn(T, B, N)
    tgt = torch.randn(T, B, K)
    mask = random_mask(0.3)
    hx0 = initial_state(gru, 1)

    def loss_fn(out):
        m = mask.float()[:, :, None]
        return (((fc(out) - tgt) ** 2) * m).sum() / (m.sum() * K)

    run("torch_gru_regress.safetensors", (("gru", gru), ("fc", fc)), gru, inp, hx0,
        loss_fn, dict(input=inp, target=tgt, mask=mask))


def gru_classify():
    torch.manual_seed(4)
    gru, fc = torch.nn.GRU(N, H, num_layers=2), torch.nn.Linear(H, C)
    inp = torch.randn(T, B, N)
    lengths = [T, 5, 7]
    label = torch.randint(0, C, (B,))
    mask = prefix_mask(lengths)
    hx0 = initial_state(gru, 2)

    def loss_fn(out):
        last = out[torch.tensor(lengths) - 1, torch.arange(B)]  # [B, H]
        return F.cross_entropy(fc(last), label)

    run("torch_gru_classify.safetensors", (("gru", gru), ("fc", fc)), gru, inp, hx0,
        loss_fn, dict(input=inp, label=label, mask=mask))


def lstm_classify():
    torch.manual_seed(5)
    emb, lstm, fc = torch.nn.Embedding(V, E), torch.nn.LSTM(E, H, num_layers=1), torch.nn.Linear(H, C)
    inp = torch.randint(0, V, (T, B))
    label = torch.randint(0, C, (B,))
    hx0 = initial_state(lstm, 1)
    run("torch_lstm_classify.safetensors", (("embedding", emb), ("lstm", lstm), ("fc", fc)),
        lstm, emb(inp), hx0, lambda out: F.cross_entropy(fc(out[T - 1]), label),
        dict(input=inp, label=label))


def documented_module(marker):
    """The Python block between `<!-- marker -->` and `<!-- /marker -->` in
    docs/cells.md, run; returns its namespace."""
    text = (DATA.parents[1] / "docs" / "cells.md").read_text()
    block = text.split(f"<!-- {marker} -->", 1)[1].split(f"<!-- /{marker} -->", 1)[0]
    code = block.split("```python", 1)[1].rsplit("```", 1)[0]
    namespace = {}
    exec(code, namespace)
    return namespace


def peephole_lm():
    torch.manual_seed(6)
    L = 2
    PeepholeLSTM = documented_module("peephole-module")["PeepholeLSTM"]
    emb, cell, fc = torch.nn.Embedding(V, E), PeepholeLSTM(E, H, L), torch.nn.Linear(H, V)
    with torch.no_grad():
        for p in cell.parameters():
            p.uniform_(-H ** -0.5, H ** -0.5)
    inp = torch.randint(0, V, (T, B))
    tgt = torch.randint(0, V, (T, B))
    mask = random_mask(0.3)
    hx0 = (0.5 * torch.randn(L, B, H), 0.5 * torch.randn(L, B, H))

    def loss_fn(out):
        return masked_ce(fc(out), tgt, mask)

    run("torch_peephole_lm.safetensors", (("embedding", emb), ("lstm", cell), ("fc", fc)),
        cell, emb(inp), hx0, loss_fn, dict(input=inp, target=tgt, mask=mask))


def lstmp_lm():
    torch.manual_seed(7)
    L, P = 2, 4
    emb = torch.nn.Embedding(V, E)
    lstm = torch.nn.LSTM(E, H, num_layers=L, proj_size=P)
    fc = torch.nn.Linear(P, V)
    inp = torch.randint(0, V, (T, B))
    tgt = torch.randint(0, V, (T, B))
    mask = random_mask(0.3)
    hx0 = (0.5 * torch.randn(L, B, P), 0.5 * torch.randn(L, B, H))

    def loss_fn(out):
        return masked_ce(fc(out), tgt, mask)

    run("torch_lstmp_lm.safetensors", (("embedding", emb), ("lstm", lstm), ("fc", fc)),
        lstm, emb(inp), hx0, loss_fn, dict(input=inp, target=tgt, mask=mask))


M64 = (1 << 64) - 1


def fin(z):
    """splitmix64's finaliser on a 64-bit unsigned integer."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def keep_mask(seed, round_, layer, p, steps, batch, width):
    """float32 [T, B, width]: 1 where docs/cells.md's dropout keeps the unit."""
    g = 0x9E3779B97F4A7C15
    thr = int(p * 4294967296.0)
    out = torch.zeros(steps, batch, width)
    k = fin(seed ^ g)
    k = fin(k ^ ((round_ * g) & M64))
    k = fin(k ^ ((layer * 0xD6E8FEB86659FD93) & M64))
    for t in range(steps):
        for b in range(batch):
            row = fin(k ^ (((t * batch + b) * 0xA0761D6478BD642F) & M64))
            for j in range(width):
                out[t, b, j] = float((fin(row ^ ((j * g) & M64)) >> 32) >= thr)
    return out


def lstm_dropout():
    torch.manual_seed(8)
    p, seed = 0.4, 5
    emb = torch.nn.Embedding(V, E)
    lstm0, lstm1 = torch.nn.LSTM(E, H), torch.nn.LSTM(H, H)
    fc = torch.nn.Linear(H, V)
    inp = torch.randint(0, V, (T, B))
    tgt = torch.randint(0, V, (T, B))
    mask = random_mask(0.3)
    h0, c0 = 0.5 * torch.randn(2, B, H), 0.5 * torch.randn(2, B, H)
    keep = keep_mask(seed, 0, 1, p, T, B, H)
    assert 0 < int(keep.sum()) < keep.numel()

    out0, (hn0, cn0) = lstm0(emb(inp), (h0[:1], c0[:1]))
    out1, (hn1, cn1) = lstm1(out0 * keep / (1 - p), (h0[1:], c0[1:]))
    loss = masked_ce(fc(out1), tgt, mask)
    loss.backward()
    tensors = param_tensors((("embedding", emb), ("fc", fc)))
    for k, module in enumerate((lstm0, lstm1)):
        for name, t in module.named_parameters():
            layer_name = name.replace("_l0", f"_l{k}")
            tensors[f"lstm.{layer_name}"] = t.detach().clone()
            tensors[f"grad.lstm.{layer_name}"] = t.grad.detach().clone()
    tensors.update(
        input=inp, target=tgt, mask=mask, h0=h0, c0=c0, loss=loss.detach().reshape(()),
        hn=torch.cat([hn0, hn1]).detach().clone(), cn=torch.cat([cn0, cn1]).detach().clone(),
        dropout_p=torch.tensor(p), dropout_seed=torch.tensor(seed),
    )
    write("torch_lstm_dropout.safetensors", tensors, loss)


def bigru_classify():
    torch.manual_seed(9)
    L = 2
    gru = torch.nn.GRU(N, H, num_layers=L, bidirectional=True)
    fc = torch.nn.Linear(2 * H, C)
    inp = torch.randn(T, B, N)
    lengths = [T, 5, 7]
    label = torch.randint(0, C, (B,))
    h0 = 0.5 * torch.randn(2 * L, B, H)
    h0[1::2] = 0.0  # reverse directions start from zero
    packed = torch.nn.utils.rnn.pack_padded_sequence(inp, lengths, enforce_sorted=False)
    _, hn = gru(packed, h0)
    loss = F.cross_entropy(fc(torch.cat([hn[-2], hn[-1]], dim=1)), label)
    loss.backward()
    mask = torch.zeros(T, B, dtype=torch.uint8)
    reset = torch.zeros(T, B, dtype=torch.uint8)
    for b, n in enumerate(lengths):
        mask[n - 1, b] = 1
        if n < T:
            reset[n, b] = 1
    tensors = param_tensors((("gru", gru), ("fc", fc)))
    tensors.update(input=inp, label=label, mask=mask, reset=reset, h0=h0,
                   loss=loss.detach().reshape(()))
    write("torch_bigru_classify.safetensors", tensors, loss)


def bilstmp_tagger():
    torch.manual_seed(10)
    L, P, K = 2, 4, 5
    emb = torch.nn.Embedding(V, E)
    lstm = torch.nn.LSTM(E, H, num_layers=L, bidirectional=True, proj_size=P)
    fc = torch.nn.Linear(2 * P, K)
    inp = torch.randint(0, V, (T, B))
    tgt = torch.randint(0, K, (T, B))
    mask = random_mask(0.3)
    h0, c0 = 0.5 * torch.randn(2 * L, B, P), 0.5 * torch.randn(2 * L, B, H)
    h0[1::2] = 0.0
    c0[1::2] = 0.0

    def loss_fn(out):
        return masked_ce(fc(out), tgt, mask)

    run("torch_bilstmp_tagger.safetensors", (("embedding", emb), ("lstm", lstm), ("fc", fc)),
        lstm, emb(inp), (h0, c0), loss_fn, dict(input=inp, target=tgt, mask=mask))


CASES = {
    "torch_lstm2": lstm2,
    "torch_gru_lm": gru_lm,
    "torch_lstm_regress": lstm_regress,
    "torch_gru_regress": gru_regress,
    "torch_gru_classify": gru_classify,
    "torch_lstm_classify": lstm_classify,
    "torch_peephole_lm": peephole_lm,
    "torch_lstmp_lm": lstmp_lm,
    "torch_lstm_dropout": lstm_dropout,
    "torch_bigru_classify": bigru_classify,
    "torch_bilstmp_tagger": bilstmp_tagger,
}
KEEP = {"torch_lstm2"}  # kept when it exists, unless named on the command line


def main(names):
    for name in names or CASES:
        if name not in CASES:
            sys.exit(f"unknown case {name!r}; expected one of {', '.join(CASES)}")
        if not names and name in KEEP and (DATA / f"{name}.safetensors").exists():
            print(f"kept {DATA / name}.safetensors (name it to regenerate)")
            continue
        CASES[name]()


if __name__ == "__main__":
    main(sys.argv[1:])
