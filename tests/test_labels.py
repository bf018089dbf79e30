import torch

from dynat_lite.labels import LabelRecorder, dynamic_labels


def test_dynamic_labels_are_the_argmax_without_gradient():
    logits = torch.randn(32, 10, requires_grad=True)
    labels = dynamic_labels(logits * 2)
    assert torch.equal(labels, logits.argmax(1))
    assert labels.dtype == torch.int64
    assert not labels.requires_grad and labels.grad_fn is None


def test_recorder_keeps_labels_confidence_and_agreement(tiny_net, batch):
    x, y = batch
    rec = LabelRecorder(x, y)
    tiny_net.train()
    rec.record(tiny_net, 0)
    with torch.no_grad():
        tiny_net.fc.bias[y[0]] += 100.0  # now everything is predicted as class y[0]
    rec.record(tiny_net, 10)
    assert rec.steps == [0, 10]
    assert rec.labels.shape == rec.confidence.shape == (2, len(y))
    assert torch.equal(rec.labels[1], torch.full_like(y, int(y[0])))
    assert torch.allclose(rec.agreement()[1], (y == y[0]).float().mean())
    assert ((rec.confidence > 0) & (rec.confidence <= 1)).all()
    assert torch.equal(rec.flips()[1], rec.labels[1] != rec.labels[0])
    assert not rec.flips()[0].any()
    assert tiny_net.training  # mode restored
    d = rec.to_dict()
    assert d["steps"] == [0, 10] and len(d["labels"][0]) == len(y)
