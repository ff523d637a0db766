"""Activation Cluster Measurement (ACM) of Progressive Staged Training (Dang et al. 2023).

ACM tells how well a model's penultimate-layer activations of a labelled image set cluster
by class: large when classes form tight, far-apart clusters. On unlearnable data that
happens early and sharply, when the model has latched onto the perturbation shortcut; ST
watches ACM to detect that moment (``docs/algorithms/staged.md``).

The paper's pipeline: penultimate activations (the input of the final Linear layer) → a 2-D
t-SNE embedding → class centres μ_k and radii r_k → one number. The formula itself was lost
from the paper's text, so the default here is a **reconstruction** (``docs/algorithms/staged.md``):
``center-ratio`` = mean over class pairs i ≠ j of ‖μ_i − μ_j‖ / (r_i + r_j), with r_k
the mean distance of class k's points to μ_k. It grows with the inter-class distance and
shrinks with the intra-class distance, as the paper says ACM does, and it is
scale-invariant, which t-SNE output (arbitrary scale) needs. ``inverse-csd`` is the
alternative from the work the paper cites as its inspiration (TUE's class-wise separability
discriminant, mean of (r_i + r_j) / ‖μ_i − μ_j‖), inverted so that larger means better
clustered. Both formulas and both embeddings are entries of small tables, so another
reading of the paper is one more entry.

Embeddings: ``tsne`` (the paper; scikit-learn, fixed seed, PCA init, a few seconds for
1,000 points on a CPU), ``pca`` (the top-2 principal components: milliseconds, a linear
projection that keeps the geometry t-SNE would distort; a documented faster option, not
the paper's), ``none`` (the raw activations).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from registry.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")


# --------------------------------------------------------------------------- activations
def penultimate_features(model: "torch.nn.Module", x: "torch.Tensor", batch_size: int = 500) -> "torch.Tensor":
    """(N, D) float32 inputs of the model's final Linear layer for uint8 images ``x``, in eval mode."""
    from bench.batches import to_float
    from bench.models import classifier_of

    head = classifier_of(model)
    dev = next(model.parameters()).device
    feats: list = []
    hook = head.register_forward_hook(lambda mod, inp, out: feats.append(inp[0].detach().flatten(1).float()))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for s in range(0, len(x), batch_size):
                xb = x[s : s + batch_size].to(dev)
                model(to_float(xb, False) if xb.dtype == torch.uint8 else xb)
    finally:
        hook.remove()
        model.train(was_training)
    return torch.cat(feats)


# --------------------------------------------------------------------------- 2-D embeddings
def _tsne(f: "torch.Tensor", seed: int, perplexity: float, max_iter: int) -> "torch.Tensor":
    """scikit-learn's Barnes-Hut t-SNE on one thread: its OpenMP gradient loop gains little
    from a second core and loses several-fold when the cores are shared (measured: 1,000
    points, 9.6 s on one thread vs 44 s on two busy cores)."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    n = f.shape[0]
    tsne = TSNE(
        n_components=2, perplexity=min(perplexity, (n - 1) / 3), init="pca", learning_rate="auto",
        max_iter=max_iter, random_state=seed,
    )
    with threadpool_limits(limits=1):
        out = tsne.fit_transform(f.cpu().double().numpy())
    return torch.from_numpy(out).float()


def _pca(f: "torch.Tensor", seed: int, perplexity: float, max_iter: int) -> "torch.Tensor":
    f = f.cpu().double()
    f = f - f.mean(0, keepdim=True)
    _, _, vh = torch.linalg.svd(f, full_matrices=False)
    return (f @ vh[:2].T).float()


def _raw(f: "torch.Tensor", seed: int, perplexity: float, max_iter: int) -> "torch.Tensor":
    return f.cpu().float()


EMBEDDINGS: dict[str, Callable] = {"tsne": _tsne, "pca": _pca, "none": _raw}


# --------------------------------------------------------------------------- formulas
def class_geometry(points: "torch.Tensor", labels: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
    """Class centres μ_k (K, d) and radii r_k (K,) = mean distance of class k's points to μ_k."""
    classes, inv = torch.unique(labels.cpu(), return_inverse=True)
    k = len(classes)
    count = torch.zeros(k).index_add_(0, inv, torch.ones(len(inv)))
    centers = torch.zeros(k, points.shape[1], dtype=points.dtype).index_add_(0, inv, points) / count[:, None]
    dist = (points - centers[inv]).norm(dim=1)
    radii = torch.zeros(k, dtype=points.dtype).index_add_(0, inv, dist) / count
    return centers, radii


def _pairs(centers, radii):
    k = len(centers)
    if k < 2:
        raise ValueError("ACM needs at least two classes in the validation set")
    off = ~torch.eye(k, dtype=torch.bool)
    gap = torch.cdist(centers[None], centers[None])[0][off]
    spread = (radii[:, None] + radii[None, :])[off]
    return gap, spread


def center_ratio(points: "torch.Tensor", labels: "torch.Tensor") -> float:
    """RECONSTRUCTION (``docs/algorithms/staged.md``): mean_{i≠j} ‖μ_i − μ_j‖ / (r_i + r_j)."""
    gap, spread = _pairs(*class_geometry(points, labels))
    return float((gap / spread.clamp_min(1e-12)).mean())


def inverse_csd(points: "torch.Tensor", labels: "torch.Tensor") -> float:
    """1 / mean_{i≠j} (r_i + r_j) / ‖μ_i − μ_j‖ (TUE's CSD, inverted: larger = better clustered)."""
    gap, spread = _pairs(*class_geometry(points, labels))
    return float(1.0 / (spread / gap.clamp_min(1e-12)).mean().clamp_min(1e-12))


FORMULAS: dict[str, Callable] = {"center-ratio": center_ratio, "inverse-csd": inverse_csd}


# --------------------------------------------------------------------------- the measurement
def acm(
    model: "torch.nn.Module",
    x: "torch.Tensor",
    y: "torch.Tensor",
    formula: str = "center-ratio",
    embedding: str = "tsne",
    seed: int = 0,
    perplexity: float = 30.0,
    tsne_iters: int = 1000,
) -> float:
    """ACM of ``model`` on the labelled uint8 images ``(x, y)``; the t-SNE settings are
    scikit-learn's defaults (perplexity 30, 1,000 iterations), which the paper does not state."""
    feats = penultimate_features(model, x)
    return acm_of_points(EMBEDDINGS[embedding](feats, seed, perplexity, tsne_iters), y, formula)


def acm_of_points(points: "torch.Tensor", labels: "torch.Tensor", formula: str = "center-ratio") -> float:
    """ACM of already-embedded points (e.g. to compare embeddings or check a formula)."""
    return FORMULAS[formula](points.double(), labels.cpu())
