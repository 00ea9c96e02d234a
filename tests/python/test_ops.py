"""The wrpn ops from Python: torch.ops.load_library(libwrpn.so), then torch.ops.wrpn.*."""
import sys

import torch

torch.ops.load_library(sys.argv[1])
w = torch.tensor([-2.0, -0.5, 0.5, 0.51], requires_grad=True)
q = torch.ops.wrpn.quantize_weight(w, 2)
assert torch.equal(q, torch.tensor([-1.0, -0.0, 0.0, 1.0])), q
q.sum().backward()
assert torch.equal(w.grad, torch.tensor([0.0, 1.0, 1.0, 1.0])), w.grad
print("python ops OK")
