"""pytorch-fid's FID Inception-v3, rebuilt to load its state dict `pt_inception-2015-12-05-6726825d.pth`.

That file holds the TensorFlow 2015-12-05 weights in torchvision's parameter names
(torch-fidelity's weights-inception-2015-12-05-6726825d.pth has the same hash prefix). The TF graph differs from torchvision's Inception in two ways, patched
here as pytorch-fid does: average pools inside blocks exclude the zero padding
(`count_include_pad=False`), and the last block pools with max instead of average.
It is fed exactly what the TorchScript is fed (299x299, scaled (x - 128) / 128, the TF
graph's own scaling; pytorch-fid itself uses 2x - 1, 0.4% wider), so both files give the
same features: tests/test_metrics_inception.py converts one into the other and compares.

torchvision is imported only here, so only users of this format pay for its import.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import inception as tv

# Keys the file may hold that the feature network does not use.
_UNUSED_PREFIXES = ("fc.", "AuxLogits.")


def _avg_pool_tf(x: torch.Tensor) -> torch.Tensor:
    # TensorFlow's SAME average pool divides by the number of real (unpadded) pixels.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class _FidInceptionA(tv.InceptionA):
    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return [self.branch1x1(x), branch5x5, branch3x3dbl, self.branch_pool(_avg_pool_tf(x))]


class _FidInceptionC(tv.InceptionC):
    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            branch7x7dbl = layer(branch7x7dbl)
        return [self.branch1x1(x), branch7x7, branch7x7dbl, self.branch_pool(_avg_pool_tf(x))]


class _FidInceptionE(tv.InceptionE):
    """`max_pool=True` for the last block (Mixed_7c), where the TF graph max-pools."""

    def __init__(self, in_channels: int, *, max_pool: bool):
        super().__init__(in_channels)
        self.max_pool = max_pool

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], 1)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = torch.cat([self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)], 1)
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _avg_pool_tf(x)
        return [self.branch1x1(x), branch3x3, branch3x3dbl, self.branch_pool(pooled)]


class PytorchFidInception(nn.Module):
    """(N, 3, 299, 299) scaled input -> (N, 2048) pool3 features, with torchvision's parameter names."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = tv.BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = tv.BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = tv.BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = tv.BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = tv.BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = _FidInceptionA(192, pool_features=32)
        self.Mixed_5c = _FidInceptionA(256, pool_features=64)
        self.Mixed_5d = _FidInceptionA(288, pool_features=64)
        self.Mixed_6a = tv.InceptionB(288)
        self.Mixed_6b = _FidInceptionC(768, channels_7x7=128)
        self.Mixed_6c = _FidInceptionC(768, channels_7x7=160)
        self.Mixed_6d = _FidInceptionC(768, channels_7x7=160)
        self.Mixed_6e = _FidInceptionC(768, channels_7x7=192)
        self.Mixed_7a = tv.InceptionD(768)
        self.Mixed_7b = _FidInceptionE(1280, max_pool=False)
        self.Mixed_7c = _FidInceptionE(2048, max_pool=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    @classmethod
    def from_state_dict(cls, state_dict: object) -> "PytorchFidInception":
        """Build and fill the network; ValueError (saying what differs) unless the keys and shapes are pytorch-fid's."""
        if not isinstance(state_dict, Mapping) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
            raise ValueError("it holds no state dict of tensors")
        network = cls()
        expected = network.state_dict()
        wanted = {k: v for k, v in state_dict.items()
                  if not k.startswith(_UNUSED_PREFIXES) and not k.endswith("num_batches_tracked")}
        missing = sorted(k for k in expected if k not in wanted and not k.endswith("num_batches_tracked"))
        unexpected = sorted(k for k in wanted if k not in expected)
        wrong_shape = sorted(k for k in wanted if k in expected and wanted[k].shape != expected[k].shape)
        if missing or unexpected or wrong_shape:
            problems = [f"{label} {keys[:3]}{'...' if len(keys) > 3 else ''}" for label, keys in
                        (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong_shape))
                        if keys]
            raise ValueError("its state dict is not pytorch-fid's FID Inception (" + "; ".join(problems) + ")")
        network.load_state_dict(wanted, strict=False)
        return network.eval()
