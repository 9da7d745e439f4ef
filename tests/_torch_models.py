"""Small seeded torch models for the torch adapter's tests, and their exported programs.

Every builder calls :func:`modtest.frameworks.torch.runtime.import_torch` first: the test process has
usually imported TensorFlow already, and torch.export would otherwise load triton after it (a
segfault; see the runtime module).
"""
from __future__ import annotations

import numpy as np


def torch():
    from modtest.frameworks.torch.runtime import import_torch

    return import_torch()


def _randomise_bn(model, seed):
    """Non-trivial batch-norm statistics and scales (fresh ones are the identity)."""
    t = torch()
    g = t.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (t.nn.BatchNorm1d, t.nn.BatchNorm2d, t.nn.BatchNorm3d)):
            n = m.num_features
            m.running_mean.copy_(t.rand(n, generator=g) - 0.5)
            m.running_var.copy_(t.rand(n, generator=g) * 2 + 0.2)
            m.weight.data.copy_(t.rand(n, generator=g) * 3 - 1.5)
            m.bias.data.copy_(t.randn(n, generator=g))
    return model


def mlp(seed=0, widths=(12, 10), n_in=6, n_out=4):
    """Linear-ReLU stack with named layers h1, h2, ..., out."""
    t = torch()
    t.manual_seed(seed)

    class MLP(t.nn.Module):
        def __init__(self):
            super().__init__()
            dims = (n_in,) + tuple(widths)
            for i, (a, b) in enumerate(zip(dims, dims[1:])):
                setattr(self, f"h{i + 1}", t.nn.Linear(a, b))
            self.out = t.nn.Linear(dims[-1], n_out)
            self.n = len(widths)

        def forward(self, x):
            x = x.flatten(1)
            for i in range(self.n):
                x = t.relu(getattr(self, f"h{i + 1}")(x))
            return self.out(x)

    return MLP().eval()


def cnn(seed=0, kind="plain", c=(4, 6, 5), n_out=3, in_ch=2, size=8):
    """Small CNNs over (in_ch, size, size) inputs exercising one topology each.

    plain: conv-BN-relu, conv-BN-relu, maxpool, conv, flatten, linear
    residual: c1 -> c2 -> add(c1, c2) -> c3 (a skip connection through add)
    concat: c1 -> c2 -> cat(c1, c2) -> c3
    grouped: c1 -> grouped conv (groups=2) -> depthwise conv -> c4
    transposed: c1 -> ConvTranspose (stride 2) -> grouped ConvTranspose -> pool
    conv1d: Conv1d stack over (in_ch, size) sequences
    """
    t = torch()
    t.manual_seed(seed)
    nn = t.nn
    a, b, d = c

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            if kind == "plain":
                self.c1, self.bn1 = nn.Conv2d(in_ch, a, 3, padding=1), nn.BatchNorm2d(a)
                self.c2, self.bn2 = nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b)
                self.c3 = nn.Conv2d(b, d, 2)
                self.fc = nn.Linear(d * (size // 2 - 1) ** 2, n_out)
            elif kind in ("residual", "concat"):
                self.c1 = nn.Conv2d(in_ch, a, 3, padding=1)
                self.c2, self.bn2 = nn.Conv2d(a, a if kind == "residual" else b, 3, padding=1), \
                    nn.BatchNorm2d(a if kind == "residual" else b)
                self.c3 = nn.Conv2d(a if kind == "residual" else a + b, d, 3)
                self.fc = nn.Linear(d, n_out)
            elif kind == "grouped":
                self.c1 = nn.Conv2d(in_ch, 4, 3, padding=1)
                self.c2 = nn.Conv2d(4, 6, 3, padding=1, groups=2, bias=False)
                self.bn2 = nn.BatchNorm2d(6)
                self.c3 = nn.Conv2d(6, 6, 3, padding=1, groups=6)
                self.c4 = nn.Conv2d(6, d, 1)
                self.fc = nn.Linear(d, n_out)
            elif kind == "transposed":
                self.c1 = nn.Conv2d(in_ch, 4, 3, stride=2, padding=1)
                self.t1 = nn.ConvTranspose2d(4, 6, 2, stride=2)
                self.t2 = nn.ConvTranspose2d(6, 4, 3, padding=1, groups=2)
                self.fc = nn.Linear(4, n_out)
            elif kind == "conv1d":
                self.c1, self.bn1 = nn.Conv1d(in_ch, a, 3, padding=1), nn.BatchNorm1d(a)
                self.c2 = nn.Conv1d(a, b, 3)
                self.fc = nn.Linear(b, n_out)

        def forward(self, x):
            r = t.relu
            if kind == "plain":
                x = r(self.bn1(self.c1(x)))
                x = t.nn.functional.max_pool2d(r(self.bn2(self.c2(x))), 2)
                return self.fc(self.c3(x).flatten(1))
            if kind in ("residual", "concat"):
                h1 = r(self.c1(x))
                h2 = r(self.bn2(self.c2(h1)))
                m = h1 + h2 if kind == "residual" else t.cat([h1, h2], 1)
                return self.fc(r(self.c3(m)).mean(dim=(2, 3)))
            if kind == "grouped":
                x = r(self.c1(x))
                x = t.nn.functional.relu6(self.bn2(self.c2(x)))
                x = r(self.c3(x))
                return self.fc(self.c4(x).mean(dim=(2, 3)))
            if kind == "transposed":
                x = r(self.c1(x))
                x = r(self.t1(x))
                x = self.t2(x)
                return self.fc(t.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))
            x = r(self.bn1(self.c1(x)))
            return self.fc(r(self.c2(x)).amax(dim=2))

    net = Net()
    _randomise_bn(net, seed)
    return net.eval()


def input_shape(kind="plain", in_ch=2, size=8):
    return (in_ch, size) if kind == "conv1d" else (in_ch, size, size)


def data(shape, n=60, seed=0):
    return np.random.default_rng(seed).random((n,) + tuple(shape)).astype("float32")


def export(module, x, *, dynamic=True):
    """The ExportedProgram of ``module`` on example inputs ``x`` (a dynamic or a fixed batch of 1)."""
    t = torch()
    ex = t.as_tensor(np.asarray(x[:2] if dynamic else x[:1]))
    if dynamic:
        return t.export.export(module, (ex,), dynamic_shapes=({0: t.export.Dim("batch")},))
    return t.export.export(module, (ex,))


def save(program, path):
    torch().export.save(program, str(path))
    return path
