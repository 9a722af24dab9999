"""The claims of the science docs, one function each (registered into `claims.CLAIMS`; see claims.py).

A function reads the results files and returns its row. Keep the claim's words here and the number computed;
the doc's prose may discuss a claim, but its number comes from this table.
"""

from __future__ import annotations

import statistics

import claims_learning  # noqa: F401  (registers docs/learning.md's claims)
import claims_tables  # noqa: F401  (registers the generated result tables)
from claims import (
    Missing,
    Row,
    against_row,
    by_seed,
    claim,
    diff_row,
    load,
    one_seed_row,
    runs,
)

from attnscope import stats

JETLEY = "Jetley et al., ICLR 2018"
XU = "Xu et al., ICML 2015"
LIU = "Liu et al., AAAI 2017"
OURS = "ours"

# -- docs/ltpa.md ------------------------------------------------------------------------------------------------


def _ltpa_acc(variant: str, path: str = "ltpa_clutter.json") -> dict[int, float]:
    return by_seed(runs(path), lambda r: r["test_acc"], variant=variant)


def _ltpa_map(variant: str, row: str, score: str, path: str = "ltpa_clutter.json") -> dict[int, float]:
    return by_seed(runs(path), lambda r: r["maps"][row][score], variant=variant)


@claim("ltpa")
def ltpa_beats_cnn() -> Row:
    """Trainable attention improves accuracy over the same CNN without it"""
    return diff_row("Trainable attention (att3, pc, softmax) is more accurate than the same CNN with global average "
                    "pooling, hard clutter", JETLEY, _ltpa_acc("att3-pc-softmax"), _ltpa_acc("cnn"), scale=100,
                    unit=" pts", digits=1, what="test accuracy, att3 − CNN")


@claim("ltpa")
def ltpa_att3_vs_att2() -> Row:
    """att3 is more accurate than att2"""
    a, b = _ltpa_acc("att3-pc-softmax"), _ltpa_acc("att2-pc-softmax")
    row = diff_row("att3 is more accurate than att2 (docs' ranking)", OURS, a, b, scale=100, unit=" pts",
                   digits=1, what="att3 − att2")
    welch = stats.welch_t(list(a.values()), list(b.values()))
    return Row(row.claim, row.paper, row.number, row.seeds,
               f"{row.test} (seeds unpaired, Welch t-test: {stats.p_text(welch.p)})", row.verdict)


@claim("ltpa")
def ltpa_pc_vs_dp() -> Row:
    """pc compatibility trains where dp does not"""
    return diff_row("The parametrised compatibility (pc) is more accurate than the dot product (dp), att3",
                    JETLEY, _ltpa_acc("att3-pc-softmax"), _ltpa_acc("att3-dp-softmax"), scale=100, unit=" pts",
                    digits=1, what="pc − dp")


@claim("ltpa")
def ltpa_localises() -> Row:
    """LTPA's attention localises the object better than the CNN's Grad-CAM"""
    return diff_row("LTPA's coarsest (8×8) attention puts more mass in the digit's box than the CNN's Grad-CAM at "
                    "the same 8×8 grid", JETLEY + " (attention maps find the object)",
                    _ltpa_map("att3-pc-softmax", "att3-pc-softmax ltpa/stages.3", "energy"),
                    _ltpa_map("cnn", "cnn grad-cam (features.3.2)", "energy"), what="energy in box, LTPA − CNN")


@claim("ltpa")
def ltpa_vs_gmp() -> Row:
    """LTPA's gain is not global max pooling's"""
    p = "ltpa_pooling.json"
    return diff_row("LTPA (att3) is more accurate than the same CNN with global *max* pooling (a pooling baseline)",
                    OURS, _ltpa_acc("att3-pc-softmax"), _ltpa_acc("gmp-cnn", p), scale=100, unit=" pts",
                    digits=1, what="att3 − GMP-CNN")


@claim("ltpa")
def ltpa_vs_attention_pool() -> Row:
    """LTPA against one attention-pooling head"""
    p = "ltpa_pooling.json"
    return diff_row("LTPA (att3) is more accurate than one attention-pooling head on the 8×8 features (LTPA's "
                    "coarsest estimator alone, no g)", OURS, _ltpa_acc("att3-pc-softmax"),
                    _ltpa_acc("attention-pool", p), scale=100, unit=" pts", digits=1, what="att3 − attention pool")


@claim("ltpa")
def ltpa_without_g() -> Row:
    """LTPA without g is as accurate (pc-softmax ignores g)"""
    p = "ltpa_pooling.json"
    return diff_row("pc-softmax LTPA ignores g: without g (c = ⟨u, l⟩) it is as accurate", OURS,
                    _ltpa_acc("att3-pc-softmax"), _ltpa_acc("att3-pc-softmax-nog", p), sign=0, scale=100,
                    unit=" pts", digits=1, what="with g − without g")


def _est(variant: str, grid: str, score: str = "energy") -> dict[int, float]:
    return by_seed(runs("ltpa_estimators"), lambda r: r["maps"][f"ltpa/stages.{grid}"][score], variant=variant)


@claim("ltpa")
def ltpa_g_scored_16() -> Row:
    """Letting g into the score (dp-scaled, avg g) makes the 16×16 estimator localise"""
    return diff_row("With g in the score (dp-scaled, g average-pooled) the 16×16 estimator puts more mass in the "
                    "box than the paper's pc-softmax, default clutter", OURS, _est("dp-scaled, avg g", "2"),
                    _est("base", "2"), what="16×16 energy, dp-scaled avg g − base")


@claim("ltpa")
def ltpa_goal_16() -> Row:
    """Our target: a 16×16 estimator with energy ≥ 0.5"""
    return against_row("Our engineering target (not the paper's): 16×16 energy ≥ 0.5, dp-scaled with avg g", OURS,
                       _est("dp-scaled, avg g", "2"), 0.5, what="16×16 energy", chance="target")


@claim("ltpa")
def ltpa_longer() -> Row:
    """Training 3 × longer does not make the 16×16 estimator localise"""
    e = _est("24 epochs", "2")
    return one_seed_row("Training 3 × longer (24 epochs) leaves the 16×16 estimator unlocalised", OURS,
                        f"16×16 energy {e[0]:.2f} (8 epochs: {statistics.mean(_est('base', '2').values()):.2f})")


@claim("ltpa")
def ltpa_sgd() -> Row:
    """The paper's SGD recipe does not make the 16×16 estimator localise"""
    a, b = _est("sgd", "2"), _est("sgd, 96 px", "2")
    return one_seed_row("The paper's SGD recipe leaves the 16×16 estimator below 0.5", JETLEY + " (recipe)",
                        f"16×16 energy {a[0]:.2f} (64 px), {b[0]:.2f} (96 px)")


# -- docs/sat.md -------------------------------------------------------------------------------------------------

def _sat(variant: str, column: str) -> dict[int, float]:
    return by_seed(runs("sat_grounding"), lambda r: r["greedy"][column], variant=variant)


CHANCE_SCENES = 0.062


@claim("sat")
def sat_soft_grounds() -> Row:
    """Soft attention aligns object words with the objects"""
    return against_row("Unsupervised soft attention points at the object a word names (grounding_ref)", XU,
                       _sat("soft", "grounding_ref"), CHANCE_SCENES, what="grounding_ref")


@claim("sat")
def sat_supervised_grounds() -> Row:
    """Supervised attention grounds words better"""
    return diff_row("Supervised attention (λ = 10) grounds object words better than soft attention", LIU,
                    _sat("soft, SA 10", "grounding_ref"), _sat("soft", "grounding_ref"),
                    what="grounding_ref, SA − soft")


@claim("sat")
def sat_supervised_bleu() -> Row:
    """Supervised attention gives better captions"""
    return diff_row("Supervised attention (λ = 10) gives better captions (BLEU-4)", LIU,
                    _sat("soft, SA 10", "bleu4"), _sat("soft", "bleu4"), digits=3, what="BLEU-4, SA − soft")


@claim("sat")
def sat_supervised_bleu_1() -> Row:
    """Supervised attention with λ = 1 gives better captions"""
    return diff_row("… and with λ = 1", LIU, _sat("soft, SA 1", "bleu4"), _sat("soft", "bleu4"), digits=3,
                    what="BLEU-4, SA(1) − soft")


@claim("sat")
def sat_uniform_gap() -> Row:
    """The unsupervised decoder does not use where it attends"""
    return against_row("The unsupervised decoder does not use where it attends: uniform α costs it nothing "
                       "(Wiegreffe & Pinter's uniform-weights test)", OURS + " (test: Wiegreffe & Pinter, EMNLP 2019)",
                       _sat("soft", "uniform_gap"), 0.0, sign=0, digits=3, what="NLL gap, nats/word", chance="zero")


@claim("sat")
def sat_supervised_uses() -> Row:
    """Supervised attention is used by the decoder"""
    return against_row("With supervised attention (λ = 10) the decoder uses α: uniform α costs it", OURS,
                       _sat("soft, SA 10", "uniform_gap"), 0.0, digits=3, what="NLL gap, nats/word", chance="zero")


@claim("sat")
def sat_attend_word() -> Row:
    """An attention that reads the last word grounds better"""
    return diff_row("Attention that also reads the last word (`attend_word`; Lu et al.'s 2017 'Knowing When to "
                    "Look' attends from the current state) grounds better, both supervised λ = 10",
                    OURS + " (cf. Lu et al., CVPR 2017)", _sat("soft, word attention, SA 10", "grounding_ref"),
                    _sat("soft, SA 10", "grounding_ref"), what="grounding_ref, attend_word − paper")


@claim("sat")
def sat_crowded() -> Row:
    """Crowded scenes do not make unsupervised attention ground"""
    a = by_seed(runs("sat_grounding"), lambda r: r["greedy"]["grounding_ref"], variant="soft, crowded")
    return against_row("On crowded scenes (4–6 objects) unsupervised attention does not ground: at chance", OURS,
                       a, 0.034, sign=0, what="grounding_ref", chance="chance")


@claim("sat")
def sat_hard_vs_soft() -> Row:
    """Hard attention captions as well as soft"""
    return one_seed_row("Hard attention captions as well as soft attention (BLEU-4, greedy, 15 epochs)", XU,
                        "0.514 vs 0.499 (docs table; runs not in experiments/results)")


@claim("sat")
def sat_doubly_stochastic() -> Row:
    """The doubly stochastic term improves BLEU"""
    return one_seed_row("The doubly stochastic regulariser improves BLEU (soft, greedy, 15 epochs)", XU,
                        "0.499 with vs 0.485 without (docs table; runs not in experiments/results)")




# -- docs/guidance.md --------------------------------------------------------------------------------------------

ROSS = "Ross et al., IJCAI 2017"


def _guide(job: str, value) -> dict[int, float]:
    from claims_tables import learning_runs

    return {s: float(value(r)) for s, r in learning_runs(job).items()}


def _random_acc(r: dict) -> float:
    return r["final"]["test_acc"]


def _patch_cost(r: dict) -> float:
    return r["final"]["clean_acc"] - r["final"]["test_acc"]


@claim("guidance")
def guidance_shortcut() -> Row:
    """Without guidance the model takes the shortcut"""
    return against_row("Without guidance a random patch colour costs accuracy: the model takes the shortcut",
                       ROSS + " (Decoy MNIST)", _guide("cnn/decoy", _patch_cost), 0.0, what="clean − random-patch "
                       "accuracy", chance="no cost", digits=3)


@claim("guidance")
def guidance_cam() -> Row:
    """The Grad-CAM guide over the digit's box removes the shortcut"""
    return diff_row("A penalty on Grad-CAM mass outside the digit's box (`cam`, λ = 1) raises random-patch accuracy",
                    OURS, _guide("cnn-cam/decoy", _random_acc), _guide("cnn/decoy", _random_acc), digits=3,
                    what="random-patch accuracy, cam − none")


@claim("guidance")
def guidance_rrr_box() -> Row:
    """RRR with the digit's box as the allowed region does not remove the shortcut"""
    return diff_row("RRR with the digit's box as the allowed region (λ = 10) does not raise random-patch accuracy",
                    OURS, _guide("cnn-rrr10/decoy", _random_acc), _guide("cnn/decoy", _random_acc), sign=0,
                    digits=3, what="rrr(box) − none")


@claim("guidance")
def guidance_rrr_decoy() -> Row:
    """RRR with the paper's annotation (only the patch forbidden) removes the shortcut"""
    return diff_row("Right for the Right Reasons with only the patch forbidden (λ = 100) raises random-patch "
                    "accuracy", ROSS, _guide("cnn-rrr100-notdecoy/decoy", _random_acc),
                    _guide("cnn/decoy", _random_acc), digits=3, what="rrr(not-decoy) − none")


@claim("guidance")
def guidance_rrr_decoy_cost() -> Row:
    """With RRR on the patch, the patch costs nothing"""
    return against_row("… and with it a random patch colour costs nothing", ROSS,
                       _guide("cnn-rrr100-notdecoy/decoy", _patch_cost), 0.0, sign=0, digits=3,
                       what="clean − random-patch accuracy", chance="no cost")


@claim("guidance")
def guidance_fooled() -> Row:
    """A guide on Grad-CAM over the patch alone hides the patch from Grad-CAM while the model still uses it"""
    cost = _guide("cnn-cam-notdecoy/decoy", _patch_cost)
    row = against_row("Penalising Grad-CAM on the patch alone (`cam`, not-decoy) leaves the shortcut in use: a random "
                      "patch still costs accuracy", "Heo et al., NeurIPS 2019 (fooling Grad-CAM)", cost, 0.0,
                      digits=3, what="clean − random-patch accuracy", chance="no cost")
    pointing = _guide("cnn-cam-notdecoy/decoy", lambda r: r["series"][-1]["gradcam/pointing@decoy"])
    return Row(row.claim, row.paper, row.number + f"; Grad-CAM points at the patch in "
               f"{100 * statistics.mean(pointing.values()):.0f} % of probe images", row.seeds, row.test, row.verdict)


# -- docs/vit.md -------------------------------------------------------------------------------------------------

ABNAR = "Abnar & Zuidema, ACL 2020"


def _az_seed_means(method: str, key: str, job: str = "vit-r0-clutter") -> dict[int, float]:
    import math

    from claims import load

    found = {}
    for r in load("abnar_zuidema.json")["seeds"]:
        if r.get("job") == job:
            values = [v for v in r["methods"][method][key] if v is not None and not math.isnan(v)]
            found[int(r["seed"])] = statistics.mean(values)
    if not found:
        raise Missing(f"abnar_zuidema.json ({job})")
    return found


def _az_row(text: str, paper: str, a: str, b: str, key: str) -> Row:
    return diff_row(text, paper, _az_seed_means(a, key), _az_seed_means(b, key), what=f"mean ρ, {a} − {b}")


@claim("vit")
def vit_rollout_blankout() -> Row:
    """Rollout follows blank-out more closely than raw attention"""
    return _az_row("Rollout correlates with blank-out importance more than raw attention does", ABNAR, "rollout",
                   "attention", "blankout_rho")


@claim("vit")
def vit_flow_blankout() -> Row:
    """Flow follows blank-out more closely than raw attention"""
    return _az_row("Attention flow correlates with blank-out importance more than raw attention does", ABNAR, "flow",
                   "attention", "blankout_rho")


@claim("vit")
def vit_rollout_gradient() -> Row:
    """Rollout follows input gradients more closely than raw attention"""
    return _az_row("Rollout correlates with input-gradient importance more than raw attention does", ABNAR, "rollout",
                   "attention", "gradient_rho")


@claim("vit")
def vit_flow_gradient() -> Row:
    """Flow follows input gradients more closely than raw attention"""
    return _az_row("Attention flow correlates with input-gradient importance more than raw attention does", ABNAR,
                   "flow", "attention", "gradient_rho")


@claim("vit")
def vit_attnlrp() -> Row:
    """AttnLRP is more faithful than Chefer et al.'s relevance"""
    return _az_row("AttnLRP follows blank-out more closely than Chefer et al.'s (CVPR 2021) relevance",
                   "Achtibat et al., ICML 2024", "attnlrp", "chefer", "blankout_rho")


def _swin(method: str) -> dict[int, float]:
    """Pointing game of `method` on TinySwin per seed (experiments/swin_clutter.py)."""
    summary = load("swin_clutter.json")
    return {int(seed): next(r["pointing"] for r in run["rows"] if r["method"] == method)
            for seed, run in summary["seeds"].items()}


@claim("vit")
def swin_rollout_points() -> Row:
    """Rollout composed over shifted windows points at the object"""
    return diff_row("On a windowed Swin, rollout composed over shifted windows and patch merging points at the digit "
                    "more often than a random map", "ours (rule: docs/vit.md)", _swin("rollout"), _swin("random"),
                    what="pointing, rollout − random")


@claim("vit")
def swin_gradcam_away() -> Row:
    """Grad-CAM on a Swin's last stage points away from the object"""
    return diff_row("On a windowed Swin, Grad-CAM at the last stage points at the digit less often than a random map",
                    "ours", _swin("random"), _swin("gradcam (norm)"), what="pointing, random − Grad-CAM")


# -- docs/sanity.md ----------------------------------------------------------------------------------------------

ADEBAYO = "Adebayo et al., NeurIPS 2018"


def _ade(init: str, method: str, step: str, to: str = "to_trained") -> dict[int, float]:
    import math

    from claims_tables import adebayo_runs

    out = {}
    for r in adebayo_runs(init):
        values = [v for v in r[to][method][step]["spearman_abs"] if v is not None and not math.isnan(v)]
        if values:
            out[int(r["command"]["seed"])] = statistics.mean(values)
    if not out:
        raise Missing(f"adebayo_crops/{init}: {method} at {step}")
    return out


for _init in ("default", "trunc-normal"):
    def _gbp_vs_gradient(init: str = _init) -> Row:
        return diff_row(f"Guided Backprop stays more similar to its trained map than the gradient does once the "
                        f"head is random (down to conv_head; {init} re-initialisation, 100 crops)", ADEBAYO,
                        _ade(init, "guided-backprop", "net.conv_head"), _ade(init, "saliency", "net.conv_head"),
                        what="ρ, Guided Backprop − gradient")

    def _gbp_full(init: str = _init) -> Row:
        return diff_row(f"… and after the full cascade ({init})", ADEBAYO,
                        _ade(init, "guided-backprop", "net.conv_stem"), _ade(init, "saliency", "net.conv_stem"),
                        what="ρ, Guided Backprop − gradient")

    def _gradcam_falls(init: str = _init) -> Row:
        return against_row(f"Grad-CAM's map falls below 0.2 rank correlation with its trained map after the full "
                           f"cascade (our target, {init})", OURS, _ade(init, "gradcam", "net.conv_stem"), 0.2,
                           sign=-1, what="ρ", chance="0.2")

    def _edges(init: str = _init) -> Row:
        return diff_row(f"Guided Backprop's map of the random network resembles the input's edges more than its "
                        f"trained map did ({init})", ADEBAYO + " (Fig. 1: edge detector)",
                        _ade(init, "guided-backprop", "net.conv_stem", "to_edges"),
                        _ade(init, "guided-backprop", "trained", "to_edges"), what="ρ with edges, random − trained")

    for _fn, _doc in ((_gbp_vs_gradient, "Guided Backprop stays similar while the gradient does not"),
                      (_gbp_full, "… after the full cascade"), (_gradcam_falls, "Grad-CAM falls below 0.2"),
                      (_edges, "Guided Backprop turns into the edge map")):
        _fn.__doc__ = f"{_doc} ({_init} re-initialisation)"
        claim("sanity")(_fn)
