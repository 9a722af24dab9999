"""`explain` from several threads on one model: every call gives the single-threaded maps, the model is intact."""

import threading

import torch

import attnscope as ats


def test_two_threads_on_one_model_give_the_maps_of_one_thread_and_leave_the_model_as_found():
    torch.manual_seed(0)
    model = ats.models.get("smallcnn", widths=[8, 16])
    model.train()
    frozen = [p.requires_grad for p in model.parameters()]
    x = torch.rand(4, 3, 32, 32)
    expected = ats.explain(model, x, ("saliency", "gradcam"))
    errors, results = [], []

    def work() -> None:
        try:
            for _ in range(15):
                results.append(ats.explain(model, x, ("saliency", "gradcam")))
        except Exception as e:  # noqa: BLE001 - collected and reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 30
    for out in results:
        assert torch.equal(out["saliency"].values, expected["saliency"].values)
        assert torch.equal(out["gradcam"].values, expected["gradcam"].values)
    assert model.training and [p.requires_grad for p in model.parameters()] == frozen
