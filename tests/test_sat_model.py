"""Show, Attend and Tell: shapes, the attention formula, soft vs hard, teacher forcing vs generation, checkpoints."""

import math

import pytest
import torch
import torch.nn.functional as F

from attnscope import models
from attnscope.data import DigitScenes, Vocabulary, collate_captions
from attnscope.errors import CheckpointError, InputError
from attnscope.models import checkpoint
from attnscope.models.sat import ShowAttendTell

VOCAB = DigitScenes.vocabulary()
SMALL = dict(encoder_widths=[8, 16, 16], embed_dim=16, hidden_dim=24, attn_dim=12, dropout=0.0, max_len=7)


def tiny(**cfg) -> ShowAttendTell:
    return models.get("sat", vocab=VOCAB.to_json(), **{**SMALL, **cfg})


@pytest.fixture(scope="module")
def batch():
    ds = DigitScenes("train", 4, size=48, digit_size=(10, 14), gap=2)
    return collate_captions([ds[i] for i in range(4)], VOCAB)


def test_shapes_through_encoder_and_decoder_and_alpha_is_a_distribution(batch):
    model = tiny()
    a, grid = model.encoder(batch.images)
    assert grid == (12, 12) and a.shape == (4, 144, 16)  # 48 px, two halvings, 16 channels
    out = model(batch.images, batch.captions)
    steps = batch.captions.shape[1] - 1
    assert out.logits.shape == (4, steps, len(VOCAB)) and out.alphas.shape == (4, steps, 144)
    assert out.betas.shape == (4, steps) and ((out.betas > 0) & (out.betas < 1)).all()
    assert (out.alphas >= 0).all() and torch.allclose(out.alphas.sum(-1), torch.ones(4, steps), atol=1e-6)
    assert not out.sampled.any() and (out.log_q == 0).all()  # soft attention samples nothing


def test_decoder_starts_as_capgen_does_small_gaussian_orthogonal_recurrent_zero_biases():
    dec = tiny(hidden_dim=32, attn_dim=32).decoder.requires_grad_(False)
    assert abs(float(dec.att_ctx.weight.std()) - 0.01) < 0.002 and abs(float(dec.embed.weight.std()) - 0.01) < 0.002
    assert torch.allclose(dec.att_hid.weight @ dec.att_hid.weight.T, torch.eye(32), atol=1e-5)  # square: orthogonal
    for gate in dec.lstm.weight_hh.view(4, 32, 32):
        assert torch.allclose(gate @ gate.T, torch.eye(32), atol=1e-5)
    assert all(float(b.abs().max()) == 0 for n, b in dec.named_parameters() if n.endswith("bias") or "bias_" in n)


def test_attention_is_the_papers_mlp_and_softmax_on_hand_set_weights():
    dec = tiny(hidden_dim=2, attn_dim=2).decoder
    with torch.no_grad():
        dec.att_hid.weight.copy_(torch.eye(2))
        dec.att_out.weight.copy_(torch.tensor([[1.0, -1.0]]))
        dec.att_out.bias.fill_(0.5)
    keys = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])  # W_a a_i + b for three positions
    h = torch.tensor([[0.5, 0.0]])
    e = [math.tanh(0.5) + 0.5, math.tanh(1.5) + 0.5, math.tanh(0.5) - math.tanh(1.0) + 0.5]
    expected = torch.tensor([math.exp(v) for v in e]) / sum(math.exp(v) for v in e)
    assert torch.allclose(dec.attend(keys, h, torch.randn(1, SMALL["embed_dim"]))[0], expected, atol=1e-6)


def test_attend_word_adds_the_word_just_read_to_the_score_which_the_papers_attention_cannot_see(batch):
    """Paper: α_t = f(a, h_{t−1}) and h_{t−1} has read y_{t−2}, so changing y_{t−1} leaves α_t as it is;
    `attend_word` adds W_y E y_{t−1} inside the tanh (hand-set weights), and then α_t follows it."""
    dec = tiny(hidden_dim=2, attn_dim=2, embed_dim=2, attend_word=True).decoder
    with torch.no_grad():
        dec.att_hid.weight.copy_(torch.eye(2))
        dec.att_word.weight.copy_(torch.tensor([[0.0, 2.0], [1.0, 0.0]]))
        dec.att_out.weight.copy_(torch.tensor([[1.0, -1.0]]))
        dec.att_out.bias.zero_()
    keys = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    h, emb = torch.tensor([[0.5, 0.0]]), torch.tensor([[1.0, -0.25]])  # W_y E y = (-0.5, 1.0)
    e = [math.tanh(0.0) - math.tanh(1.0), math.tanh(1.0) - math.tanh(1.0), math.tanh(0.0) - math.tanh(2.0)]
    expected = torch.tensor([math.exp(v) for v in e]) / sum(math.exp(v) for v in e)
    assert torch.allclose(dec.attend(keys, h, emb)[0], expected, atol=1e-6)

    torch.manual_seed(0)
    for attend_word in (False, True):
        model = tiny(attend_word=attend_word).eval()
        with torch.no_grad():
            for p in model.decoder.parameters():
                p.normal_(0.0, 0.5)
        other = batch.captions[:2].clone()
        other[:, 2] = (other[:, 2] + 1) % len(VOCAB)  # the input of step 2 (which predicts word 3) changed
        a, b = model(batch.images[:2], batch.captions[:2]).alphas, model(batch.images[:2], other).alphas
        assert torch.equal(a[:, :2], b[:, :2])  # steps before the change
        assert torch.equal(a[:, 2], b[:, 2]) is not attend_word  # step 2's α reads its input only with attend_word
        assert not torch.allclose(a[:, 3], b[:, 3], atol=1e-4)  # it reaches step 3's h_{t−1} either way


def test_hard_attention_on_a_one_hot_alpha_equals_soft_and_samples_follow_alpha(batch):
    model = tiny(attention="hard")
    with torch.no_grad():  # attention all but certain of position 5: e_5 = 50, others 0
        model.decoder.att_out.weight.zero_()
        model.decoder.att_out.bias.zero_()
        model.decoder.att_ctx.weight.zero_()
        model.decoder.att_ctx.bias.zero_()
        model.decoder.att_ctx.bias[0] = 1.0
        model.decoder.att_out.weight[0, 0] = 50.0
        model.decoder.att_ctx.register_forward_hook(lambda m, i, o: o * (torch.arange(144) == 5)[None, :, None])
    soft = model(batch.images, batch.captions, sample=False)
    steps = batch.captions.shape[1] - 1
    forced = model(batch.images, batch.captions, locations=torch.full((4, steps), 5))
    assert torch.allclose(soft.logits, forced.logits, atol=1e-4) and forced.sampled.all()
    assert torch.allclose(forced.log_q, torch.zeros(4, steps), atol=1e-6)  # log α_5 ≈ 0
    elsewhere = model(batch.images, batch.captions, locations=torch.full((4, steps), 7))
    assert not torch.allclose(soft.logits, elsewhere.logits, atol=1e-3)  # a different location changes z
    model.train()
    torch.manual_seed(1)
    drawn = model(batch.images, batch.captions)  # expectation_prob 0.5: some captions sample
    assert drawn.sampled.any() and ((drawn.log_q == 0) | drawn.sampled[:, None]).all()


def test_greedy_score_is_the_teacher_forced_log_probability_of_its_own_caption(batch):
    model = tiny().eval()
    with torch.no_grad():
        model.decoder.out.bias[VOCAB.end_id] = 3.0  # so that some captions end within max_len
    found = model.caption(batch.images)
    assert found.tokens.shape[0] == 4 and found.alphas.shape[:2] == found.tokens.shape
    assert found.finished.any()
    ids = torch.cat([torch.full((4, 1), VOCAB.start_id), found.tokens], 1)
    out = model(batch.images, ids)
    logits = out.logits.index_fill(2, torch.tensor([VOCAB.pad_id, VOCAB.start_id]), float("-inf"))
    logits[:, 0, VOCAB.end_id] = float("-inf")  # nor an empty caption
    logp = F.log_softmax(logits, -1).gather(2, found.tokens[..., None]).squeeze(2)  # (B, T)
    emitted = torch.ones_like(found.tokens, dtype=torch.bool)
    for i, row in enumerate(found.tokens.tolist()):
        if VOCAB.end_id in row:
            emitted[i, row.index(VOCAB.end_id) + 1 :] = False
    assert torch.allclose((logp * emitted).sum(1), found.scores, atol=1e-4)
    h, w = out.grid
    alphas = out.alphas.view(4, -1, h, w) * emitted[..., None, None]
    assert torch.allclose(alphas, found.alphas, atol=1e-6)


def test_checkpoint_rebuilds_the_vocabulary_and_other_vocabularies_refuse_the_weights(tmp_path, batch):
    model = tiny().eval()
    path = checkpoint.save(model, tmp_path / "sat.safetensors")
    loaded, header = checkpoint.load(path)
    assert loaded.vocab == VOCAB and header["model"]["config"]["vocab"] == VOCAB.to_json()
    assert torch.equal(loaded(batch.images, batch.captions).logits, model(batch.images, batch.captions).logits)
    swapped = VOCAB.words[:]
    swapped[0], swapped[1] = swapped[1], swapped[0]  # same size, other words: only the fingerprint tells
    other = models.get("sat", vocab=Vocabulary(swapped).to_json(), **SMALL)
    with pytest.raises(CheckpointError, match="another vocabulary"):
        other.load_state_dict(model.state_dict())
    with pytest.raises(InputError, match="needs a vocabulary"):
        models.get("sat")
    with pytest.raises(InputError, match="attention must be one of"):
        tiny(attention="sharp")


def test_torchvision_backbone_truncated_frozen_and_loaded_from_a_local_file(tmp_path):
    import torchvision

    reference = torchvision.models.resnet18(num_classes=3)
    torch.save(reference.state_dict(), tmp_path / "r18.pt")
    model = tiny(encoder="resnet18", encoder_layer="layer2", freeze_encoder=True, weights=str(tmp_path / "r18.pt"))
    assert "weights" not in model.attnscope_spec["config"]
    a, grid = model.encoder(torch.rand(2, 3, 64, 64))
    assert grid == (8, 8) and a.shape == (2, 64, 128)  # layer2 of ResNet-18: stride 8, 128 channels
    assert torch.equal(model.encoder.body.conv1.weight, reference.conv1.weight)
    assert not any(p.requires_grad for p in model.encoder.parameters())
    model.train()
    assert not model.encoder.body.training and model.decoder.training  # frozen BatchNorm keeps its statistics
    with pytest.raises(InputError, match="encoder_layer must name a module of resnet18"):
        tiny(encoder="resnet18", encoder_layer="layer9")


def test_smallcnn_encoder_starts_from_a_smallcnn_classifier_checkpoint(tmp_path):
    classifier = models.get("smallcnn", widths=[8, 16, 16], num_classes=10)
    path = checkpoint.save(classifier, tmp_path / "cnn.safetensors")
    model = tiny(weights=str(path))
    for key, value in classifier.features.state_dict().items():
        assert torch.equal(model.encoder.body.state_dict()[key], value)
    with pytest.raises(CheckpointError, match="does not fit the smallcnn encoder"):
        tiny(weights=str(path), encoder_widths=[8, 16, 32])


def test_position_channels_are_the_cell_centres_in_raster_order(batch):
    from attnscope.models.sat import grid_positions

    expected = torch.tensor([[-2 / 3, -0.5], [0.0, -0.5], [2 / 3, -0.5], [-2 / 3, 0.5], [0.0, 0.5], [2 / 3, 0.5]])
    assert torch.allclose(grid_positions(2, 3, torch.zeros(())), expected[None], atol=1e-6)
    plain, placed = tiny(), tiny(position_channels=True)
    placed.encoder.load_state_dict(plain.encoder.state_dict())
    a, grid = plain.encoder(batch.images)
    b, _ = placed.encoder(batch.images)
    assert placed.encoder.dim == plain.encoder.dim + 2 and b.shape == (*a.shape[:2], a.shape[2] + 2)
    assert torch.equal(b[..., :-2], a) and torch.allclose(b[0, :, -2:], grid_positions(*grid, a)[0])
    assert placed(batch.images, batch.captions).alphas.shape == (4, batch.captions.shape[1] - 1, 144)
    scaled = tiny(position_channels=True, annotation_scale=0.25)
    scaled.encoder.load_state_dict(plain.encoder.state_dict())
    c, _ = scaled.encoder(batch.images)
    assert torch.allclose(c[..., :-2], 0.25 * a) and torch.equal(c[..., -2:], b[..., -2:])  # positions unscaled
    with pytest.raises(InputError, match="annotation_scale must be > 0"):
        tiny(annotation_scale=0.0)


def test_param_groups_give_a_fine_tuned_encoder_its_own_learning_rate():
    from attnscope.train.loop import param_groups

    model = tiny(encoder_lr_scale=0.1)
    groups = param_groups(model, 1e-2)
    assert [g["lr"] for g in groups] == [1e-2, pytest.approx(1e-3)]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.encoder.parameters()}
    assert len(param_groups(tiny(freeze_encoder=True), 1e-2)) == 1  # a frozen encoder has nothing to train
    with pytest.raises(InputError, match="encoder_lr_scale"):
        tiny(encoder_lr_scale=-1.0)
    model.param_groups = lambda: [{"params": list(model.decoder.parameters())}]  # forgets the encoder
    with pytest.raises(InputError, match="every trainable parameter exactly once"):
        param_groups(model, 1e-2)


@pytest.mark.parametrize("init", ["zero", "learned"])
def test_a_constant_initial_state_lets_the_image_in_only_through_attention(batch, init):
    L, D = 6, 5
    a1 = torch.randn(2, L, D)
    a2 = a1.clone()
    a2[:, 1:] = torch.randn(2, L - 1, D) * 3  # other annotations, a_0 (the only one attended) kept
    one_hot = lambda keys, h, emb: F.one_hot(torch.zeros(keys.shape[0], dtype=torch.long), keys.shape[1]).float()

    def logits(model: ShowAttendTell, a: torch.Tensor) -> torch.Tensor:
        model.encoder.forward = lambda images: (a, (2, 3))
        model.decoder.attend = one_hot
        return model(torch.zeros(2, 3, 8, 8), batch.captions[:2]).logits

    torch.manual_seed(0)
    const, paper = tiny(init_state=init).eval(), tiny().eval()
    for model in (const, paper):  # a decoder for the fake annotations, with weights large enough to matter
        model.decoder = type(model.decoder)(model.config, len(VOCAB), D)
        with torch.no_grad():
            for p in model.decoder.parameters():  # h0, c0 too for "learned"
                p.normal_(0.0, 0.5)
    h0, c0 = const.decoder.init_state(a1)
    assert h0.shape == (2, SMALL["hidden_dim"]) and torch.equal(h0, const.decoder.init_state(a2)[0])
    assert torch.equal(h0[0], h0[1]) and torch.equal(c0[0], c0[1])
    if init == "zero":
        assert not h0.any() and not c0.any() and "decoder.h0" not in const.state_dict()  # nothing saved for zeros
    else:
        assert torch.equal(h0[0], torch.tanh(const.decoder.h0))
    assert const.decoder.init_h is None and "decoder.init_h.weight" not in const.state_dict()
    assert torch.allclose(logits(const, a1), logits(const, a2), atol=0)
    assert not torch.allclose(logits(paper, a1), logits(paper, a2), atol=1e-3)  # ā reaches h0 in the paper's


def test_init_state_is_checked_and_a_learned_one_trains_and_round_trips(tmp_path, batch):
    with pytest.raises(InputError, match="init_state must be one of"):
        tiny(init_state="mean_annotation")
    model = tiny(init_state="learned")
    out = model(batch.images, batch.captions)
    F.cross_entropy(out.logits.flatten(0, 1), batch.captions[:, 1:].flatten()).backward()
    assert model.decoder.h0.grad.abs().sum() > 0 and model.decoder.c0.grad.abs().sum() > 0
    with torch.no_grad():
        model.decoder.h0.add_(0.5)
    again, _ = checkpoint.load(checkpoint.save(model, tmp_path / "sat.safetensors"))
    assert torch.equal(again.decoder.h0, model.decoder.h0)
    for beam in (1, 2):
        assert torch.equal(again.eval().caption(batch.images, beam_size=beam).tokens,
                           model.eval().caption(batch.images, beam_size=beam).tokens)
