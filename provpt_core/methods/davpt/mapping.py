"""Which prompt of a guided block is each class's proxy: k-means of class-mean CLS features."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from provpt_core.methods.config.davpt import EmptyClusters, KMeansInit, KMeansNorm



def sample_per_class(
    labels: torch.Tensor, classes: int, per_class: int, generator: torch.Generator
) -> torch.Tensor:
    """How often each image [n] is drawn when taking `per_class` images of every class, as the
    authors' mapping sampler does: without replacement; a class with fewer images gives each
    of them as often as fits and a random few once more. A class without images gives none."""
    labels = labels.cpu()
    draws = torch.zeros(len(labels))
    for label in range(classes):
        members = torch.nonzero(labels == label).flatten()
        if len(members) == 0:
            continue
        whole, rest = divmod(per_class, len(members))
        draws[members] += whole
        draws[members[torch.randperm(len(members), generator=generator)[:rest]]] += 1
    return draws


def normalize_points(points: torch.Tensor, norm: KMeansNorm) -> torch.Tensor:
    """The authors normalise the class means before clustering: a layer norm without weights
    ("layer", their default), unit length ("l2") or not at all."""
    if norm == "layer":
        return F.layer_norm(points, points.shape[1:])
    if norm == "l2":
        return F.normalize(points, dim=1)
    return points


def cosine_kmeans(
    points: torch.Tensor,
    clusters: int,
    iterations: int,
    generator: torch.Generator,
    centroids: torch.Tensor | None = None,
    norm: KMeansNorm = "layer",
    init: KMeansInit = "random",
    empty: EmptyClusters = "keep",
    tolerance: float = 1e-4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Assignments [n] and centroids [clusters, dim] of k-means with cosine similarity.

    Points are normalised by `norm`; a centroid is the plain mean of its (normalised) points.
    Starts from `centroids` when given, else from `clusters` distinct random points ("random":
    the authors' code) or k-means++ seeds. An emptied cluster keeps its previous centroid
    ("keep": the authors'; it may stay empty, and its prompt then has no class) or takes the
    point that fits its own cluster worst ("refill": every cluster keeps at least one point).
    Stops after `iterations` or once the centroids move less than `tolerance` in total.
    """
    points = normalize_points(points.float(), norm)
    if centroids is None:
        centroids = _seeds(points, clusters, init, generator)
    centroids = centroids.float().clone()
    unit = F.normalize(points, dim=1)
    for _ in range(iterations):
        similarity = unit @ F.normalize(centroids, dim=1).T
        assign = similarity.argmax(dim=1)
        if empty == "refill":
            _refill(assign, similarity, clusters)
        sizes = torch.bincount(assign, minlength=clusters)
        sums = torch.zeros_like(centroids).index_add_(0, assign, points)
        moved = torch.where(sizes[:, None] > 0, sums / sizes.clamp_min(1)[:, None], centroids)
        shift = float((moved - centroids).norm(dim=1).sum())
        centroids = moved
        if shift < tolerance:
            break
    return assign, centroids


def _seeds(points: torch.Tensor, clusters: int, init: KMeansInit, generator: torch.Generator) -> torch.Tensor:
    if len(points) < clusters:
        raise ValueError(f"k-means: {len(points)} classes with features cannot seed {clusters} clusters")
    if init == "random":
        return points[torch.randperm(len(points), generator=generator)[:clusters]]
    unit = F.normalize(points, dim=1)
    chosen = [int(torch.randint(len(points), (1,), generator=generator))]
    for _ in range(clusters - 1):
        distance = (1 - unit @ unit[chosen].T).min(dim=1).values.clamp_min(0)
        chosen.append(int(torch.multinomial(distance + 1e-12, 1, generator=generator)))
    return points[chosen]


def _refill(assign: torch.Tensor, similarity: torch.Tensor, clusters: int) -> None:
    """Give each empty cluster the point fitting its own cluster worst, never emptying another."""
    for empty in sorted(set(range(clusters)) - set(assign.tolist())):
        fit = similarity[torch.arange(len(assign)), assign]
        sizes = torch.bincount(assign, minlength=clusters)
        fit[sizes[assign] <= 1] = float("inf")
        assign[int(fit.argmin())] = empty
