"""labels.train_guide: a guide trained from scratch while its dynamic labels are recorded."""
import torch

from dynat_lite import data, labels, train


def test_train_guide_records_labels_and_learns():
    cfg = train.config("smoke", n_train=128, n_test=32, epochs=2, batch_size=32, lr=0.05)
    ds = data.load("synthetic", n_train=128, n_test=32, seed=0)
    probe_x, probe_y = ds.x_test[:32], ds.y_test[:32]
    guide, rec = labels.train_guide(cfg, probe_x, probe_y, every=3, dataset=ds)
    total = 2 * (128 // 32)
    assert rec.steps[0] == 0 and rec.steps[-1] == total
    assert rec.steps == sorted(set(rec.steps))
    assert all(s % 3 == 0 for s in rec.steps[:-1])
    assert rec.labels.shape == (len(rec.steps), 32)
    assert not guide.training
    # Training moved the labels: some probe image changed its label along the way.
    assert rec.flips().any()


def test_train_guide_stops_at_max_steps_and_is_reproducible():
    cfg = train.config("smoke", n_train=128, n_test=32, epochs=1, batch_size=32)
    ds = data.load("synthetic", n_train=128, n_test=32, seed=0)
    g1, r1 = labels.train_guide(cfg, ds.x_test, ds.y_test, every=1, max_steps=2, dataset=ds)
    g2, r2 = labels.train_guide(cfg, ds.x_test, ds.y_test, every=1, max_steps=2, dataset=ds)
    assert r1.steps == [0, 1, 2]
    assert torch.equal(r1.labels, r2.labels)
    for a, b in zip(g1.parameters(), g2.parameters()):
        assert torch.equal(a, b)


def test_train_guide_also_records_other_probes_at_the_same_steps():
    cfg = train.config("smoke", n_train=128, n_test=32, epochs=1, batch_size=32)
    ds = data.load("synthetic", n_train=128, n_test=32, seed=0)
    on_train = labels.LabelRecorder(ds.x_train[:16], ds.y_train[:16])
    guide, rec = labels.train_guide(cfg, ds.x_test, ds.y_test, every=2, dataset=ds,
                                    also=[on_train])
    assert on_train.steps == rec.steps == [0, 2, 4]
    assert on_train.labels.shape == (3, 16)
    # The last record is the returned guide's labels on those training images.
    assert torch.equal(on_train.labels[-1], labels.predict(guide, ds.x_train[:16]).argmax(1))
