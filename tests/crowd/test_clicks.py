"""Instance spotting (crowd.aggregation.clicks): clicks of several workers -> instances."""
from __future__ import annotations

import numpy as np
import pytest

from crowd.aggregation.clicks import cluster_clicks, connected_components, group_median, too_many_vote


def simulate(centres_by_group, n_workers=5, noise=4.0, miss=0.1, seed=0, scale=1.0):
    """Each worker clicks near each instance (Gaussian noise, sometimes missing one)."""
    rng = np.random.default_rng(seed)
    rows = []
    for (image, category), centres in centres_by_group.items():
        for w in range(n_workers):
            for c in np.asarray(centres, dtype=float) * scale:
                if rng.random() >= miss:
                    p = c + rng.normal(0, noise * scale, 2)
                    rows.append((image, category, w, p[0], p[1]))
    a = np.array(rows)
    return a[:, 0].astype(int), a[:, 1].astype(int), a[:, 2].astype(int), a[:, 3], a[:, 4]


CENTRES = {
    (0, 0): [[100, 100], [300, 200], [500, 400]],
    (0, 3): [[50, 420]],
    (1, 0): [[20, 30], [200, 120]],
}
SIZES = dict(image_width=[640, 320], image_height=[480, 240])


def test_one_instance_per_object_at_the_median():
    imgs, cats, ws, x, y = simulate(CENTRES)
    inst = cluster_clicks(imgs, cats, ws, x, y, **SIZES)
    assert len(inst) == 6
    assert list(zip(inst.image.tolist(), inst.category.tolist())) == [(0, 0)] * 3 + [(0, 3), (1, 0), (1, 0)]
    expected = np.array(CENTRES[(0, 0)] + CENTRES[(0, 3)] + CENTRES[(1, 0)], dtype=float)
    assert np.abs(np.c_[inst.x, inst.y] - expected).max() < 6
    # each worker clicked each instance at most once, so distinct workers == clicks
    assert np.array_equal(inst.n_workers, inst.n_clicks) and inst.n_clicks.sum() == len(x)
    assert np.all(inst.n_workers >= 3) and np.all(inst.n_workers <= 5)
    # every click belongs to the instance of its group nearest to it
    assert np.all(inst.instance_of_click >= 0)
    assert np.all(inst.image[inst.instance_of_click] == imgs)
    assert np.all(inst.category[inst.instance_of_click] == cats)


def test_a_click_few_workers_agree_on_is_dropped():
    imgs, cats, ws, x, y = simulate({(0, 0): [[100, 100]]}, n_workers=3, miss=0)
    imgs, cats, ws = np.r_[imgs, 0], np.r_[cats, 0], np.r_[ws, 7]
    x, y = np.r_[x, 600.0], np.r_[y, 20.0]
    inst = cluster_clicks(imgs, cats, ws, x, y, image_width=[640], image_height=[480])
    assert len(inst) == 1 and inst.instance_of_click[-1] == -1
    assert len(cluster_clicks(imgs, cats, ws, x, y, image_width=[640], image_height=[480], min_workers=1)) == 2
    assert len(cluster_clicks(imgs, cats, ws, x, y, image_width=[640], image_height=[480], min_workers=4)) == 0


def test_neighbouring_clicks_of_one_worker_keep_close_instances_apart():
    """Two people 30 px apart, well inside 10% of the diagonal (80 px): each worker clicked both,
    so the radius shrinks to half their distance and the two stay separate."""
    centres = {(0, 0): [[300, 200], [330, 205]]}
    imgs, cats, ws, x, y = simulate(centres, n_workers=6, noise=3, miss=0, seed=4)
    inst = cluster_clicks(imgs, cats, ws, x, y, image_width=[640], image_height=[480])
    assert len(inst) == 2
    assert np.abs(np.c_[inst.x, inst.y] - np.array(centres[(0, 0)])).max() < 5
    # without the neighbour rule (a huge neighbour_frac), the diagonal radius merges them
    merged = cluster_clicks(imgs, cats, ws, x, y, image_width=[640], image_height=[480], neighbour_frac=100)
    assert len(merged) == 1


def test_radius_scales_with_the_image():
    small = simulate(CENTRES, noise=6, seed=3)
    big = simulate(CENTRES, noise=6, seed=3, scale=10)
    a = cluster_clicks(*small, **SIZES)
    b = cluster_clicks(*big, image_width=[6400, 3200], image_height=[4800, 2400])
    assert np.array_equal(a.instance_of_click, b.instance_of_click)
    assert np.allclose(a.x * 10, b.x) and np.allclose(a.y * 10, b.y)


def test_order_of_clicks_does_not_matter():
    imgs, cats, ws, x, y = simulate(CENTRES, seed=9)
    a = cluster_clicks(imgs, cats, ws, x, y, **SIZES)
    perm = np.random.default_rng(1).permutation(len(x))
    b = cluster_clicks(imgs[perm], cats[perm], ws[perm], x[perm], y[perm], **SIZES)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    assert np.array_equal(a.instance_of_click[perm], b.instance_of_click)


def test_bad_input():
    with pytest.raises(ValueError, match="no clicks"):
        cluster_clicks([], [], [], [], [], image_width=[1], image_height=[1])
    with pytest.raises(ValueError, match="same length"):
        cluster_clicks([0], [0, 0], [0], [1.0], [1.0], image_width=[10], image_height=[10])
    with pytest.raises(ValueError, match="one entry per image"):
        cluster_clicks([0, 1], [0, 0], [0, 1], [1.0, 2.0], [1.0, 2.0], image_width=[10], image_height=[10])
    with pytest.raises(ValueError, match="non-finite"):
        cluster_clicks([0], [0], [0], [np.nan], [1.0], image_width=[10], image_height=[10])


def test_connected_components_and_group_median():
    # a long chain and a pair: pointer jumping must still finish with one label per component
    chain = np.arange(99)
    labels = connected_components(102, np.r_[chain, 100], np.r_[chain + 1, 101])
    assert set(labels[:100]) == {0} and labels[100] == labels[101] == 100
    assert group_median(np.array([0, 0, 0, 2, 2]), np.array([5.0, 1.0, 3.0, 4.0, 2.0]), 3).tolist()[0] == 3.0
    m = group_median(np.array([0, 0, 0, 2, 2]), np.array([5.0, 1.0, 3.0, 4.0, 2.0]), 3)
    assert m[2] == 3.0 and np.isnan(m[1])


def test_too_many_is_a_vote_of_workers():
    # image 0 cat 0: 2 of 3 workers tick; image 0 cat 1: 1 of 2 (tie -> too many);
    # image 1 cat 0: worker 0 answered twice, ticked once -> counts once; worker 1 did not tick
    images = [0, 0, 0, 0, 0, 1, 1, 1]
    cats = [0, 0, 0, 1, 1, 0, 0, 0]
    workers = [0, 1, 2, 0, 1, 0, 0, 1]
    flags = [1, 1, 0, 1, 0, 1, 0, 0]
    tm = too_many_vote(images, cats, workers, flags)
    assert tm.image.tolist() == [0, 0, 1] and tm.category.tolist() == [0, 1, 0]
    assert tm.n_workers.tolist() == [3, 2, 2] and tm.n_flagged.tolist() == [2, 1, 1]
    assert tm.too_many.tolist() == [True, True, True]
    strict = too_many_vote(images, cats, workers, flags, min_share=0.6)
    assert strict.too_many.tolist() == [True, False, False]
    with pytest.raises(ValueError, match="0 or 1"):
        too_many_vote([0], [0], [0], [3])
