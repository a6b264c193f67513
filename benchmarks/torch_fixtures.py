"""Prints the torch reference numbers that tests/test_kernels.py keeps as literal fixtures.

torch is not a test dependency, so the tests hold these numbers instead of calling torch. They
were made by this script with torch 2.13.0 (CPU) in float64:

    python benchmarks/torch_fixtures.py      # in an environment with torch
"""
import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)
# 2-D bicubic: image 4x5 values (i*5+j)^1.5 / 10 (non-linear so bicubic differs from bilinear)
img = (torch.arange(20, dtype=torch.float64).reshape(1, 1, 4, 5) ** 1.5) / 10
pts = torch.tensor([[[[-0.93, -0.41], [0.37, 0.88], [1.21, -1.35], [-1.62, 0.55], [0.05, 0.02], [2.7, 3.1]]]])
print("IMAGE_2D = (np.arange(20.0).reshape(4, 5) ** 1.5) / 10")
print("POINTS_2D =", pts[0, 0].tolist())
out = {}
for pad in ["zeros", "border", "reflection"]:
    for ac in [False, True]:
        v = F.grid_sample(img, pts, mode="bicubic", padding_mode=pad, align_corners=ac)
        out[(pad, ac)] = [round(x, 12) for x in v.flatten().tolist()]
print("TORCH_BICUBIC = {")
for k, v in out.items(): print(f"    {k!r}: {v},")
print("}")
vol = (torch.arange(60, dtype=torch.float64).reshape(1, 1, 3, 4, 5) ** 1.5) / 10
pts3 = torch.tensor([[[[[-0.93, -0.41, 0.3], [0.37, 0.88, -0.77], [1.21, -1.35, 0.1], [-1.62, 0.55, 1.4], [0.05, 0.02, -0.01], [0.6, -0.2, -1.3]]]]])
print("VOLUME = (np.arange(60.0).reshape(3, 4, 5) ** 1.5) / 10")
print("POINTS_3D =", pts3[0, 0, 0].tolist())
print("TORCH_TRILINEAR = {")
for pad in ["zeros", "border", "reflection"]:
    for ac in [False, True]:
        for mode in ["bilinear", "nearest"]:
            v = F.grid_sample(vol, pts3, mode=mode, padding_mode=pad, align_corners=ac)
            print(f"    {(mode, pad, ac)!r}: {[round(x, 12) for x in v.flatten().tolist()]},")
print("}")
print(torch.__version__)
