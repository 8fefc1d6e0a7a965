# Generates the AdamW / RAdam traces pinned in tests/test_learned_rounding.cpp with PyTorch itself:
# a 4x6 weight, FP8 tensor scaling, a fixed orthonormal rank-2 basis, 4 loss evaluations (3 steps).
#   python3 tests/data/adam_trace.py     (needs torch)
import torch

W = torch.tensor([[0.50, -0.25, 0.125, 0.75, -1.00, 0.0625],
                  [0.3125, 0.875, -0.5, 0.1875, 0.25, -0.625],
                  [-0.0625, 0.4375, 0.9375, -0.8125, 0.5625, 0.375],
                  [0.6875, -0.9375, 0.0, 0.21875, -0.34375, 0.15625]], dtype=torch.float32)
# A generic orthonormal rank-2 basis (no element of U_k P V_k cancels to zero), printed in full.
g = torch.Generator().manual_seed(7)
U = torch.linalg.qr(torch.randn(4, 2, generator=g, dtype=torch.float64))[0].float()
V = torch.linalg.qr(torch.randn(6, 2, generator=g, dtype=torch.float64))[0].T.float()
print("U", ", ".join(repr(x) for x in U.flatten().tolist()))
print("V", ", ".join(repr(x) for x in V.flatten().tolist()))
for name, cls, lr in (("adamw", torch.optim.AdamW, 0.5), ("radam", torch.optim.RAdam, 0.5)):
    scale = 448.0 / W.abs().max()
    Wr = (W * scale).to(torch.float8_e4m3fn).to(torch.float32)
    delta = torch.zeros_like(Wr, requires_grad=True)
    opt = cls([delta], lr=lr)
    losses, deltas = [], []
    for i in range(4):
        opt.zero_grad()
        P = U.T @ ((Wr + delta) / scale - W) @ V.T
        loss = torch.linalg.norm(P)
        losses.append(loss.item())
        deltas.append(delta.detach().clone())
        loss.backward()
        if i == 0:
            print(name, "smallest |gradient|", delta.grad.abs().min().item(), "largest", delta.grad.abs().max().item())
        opt.step()
    best = min(range(4), key=lambda i: losses[i])
    final = (Wr + deltas[best]).clamp(-448, 448).to(torch.float8_e4m3fn).view(torch.uint8)
    print(name, "losses", ", ".join(repr(x) for x in losses), "best", best)
    print(name, "delta3", ", ".join(repr(x) for x in deltas[3].flatten().tolist()))
    print(name, "codes", ", ".join(str(int(x)) for x in final.flatten().tolist()))
