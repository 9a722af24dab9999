"""The command line of the image–text models: `explain --text/--texts` for a dual encoder, `caption --methods` for
any captioner (attnscope's, and a Hugging Face one from a save_pretrained folder), `train` of both tiny models."""

from __future__ import annotations

import json

import pytest
import torch

from attnscope.cli import main

SCENES = ["--data-opt", "size=48", "--data-opt", "digit_size=[10,14]"]
SMALL = ["--model-opt", "image_size=48", "--model-opt", "dim=16", "--model-opt", "depth=1", "--model-opt", "heads=2"]


def _train(tmp_path, model: str, *extra: str):
    out = tmp_path / model
    main(["train", "--model", model, "--data", "scenes", *SCENES, *SMALL, *extra, "--n", "16", "--n-test", "8",
          "--epochs", "1", "--batch-size", "8", "--out", str(out), "--quiet"])
    return out


def test_explain_texts_writes_a_map_per_prompt_and_highlighted_tokens(tmp_path) -> None:
    run = _train(tmp_path, "clip-tiny", "--model-opt", "text_dim=16", "--model-opt", "embed_dim=8")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red three\n\na blue seven\n")
    out = tmp_path / "maps"
    main(["explain", "--model", str(run), "--images", "scenes", "--size", "48", "--n", "2", "--text", "a green two",
          "--texts", str(prompts), "--methods", "gradcam,chefer-mm", "--token-methods", "inputxgrad,chefer-mm",
          "--out", str(out), "--quiet"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["texts"] == ["a green two", "a red three", "a blue seven"]
    assert sorted(manifest["methods"]) == sorted(f"{m}/t{k}" for m in ("gradcam", "chefer-mm") for k in range(3))
    tokens = json.loads((out / "tokens.json").read_text())
    assert [w for w, _ in tokens["methods"]["inputxgrad"][0][1]] == ["<start>", "a", "red", "three", "<end>"]
    assert "<span" in (out / "tokens.html").read_text()
    assert len(list((out / "overlays" / "gradcam" / "t2").iterdir())) == 2


def test_explain_texts_refuses_what_does_not_fit(tmp_path, capsys) -> None:
    run = _train(tmp_path, "clip-tiny", "--model-opt", "text_dim=16", "--model-opt", "embed_dim=8")
    for extra, message in [(["--texts", str(tmp_path / "none.txt")], "no such file"),
                           (["--text", "a red three", "--targets", "3"], "without --targets"),
                           (["--text", "a red three", "--stream"], "and --stream"),
                           (["--text", " "], "non-empty prompts")]:
        with pytest.raises(SystemExit) as info:
            main(["explain", "--model", str(run), "--images", "scenes", "--size", "48", *extra,
                  "--out", str(tmp_path / "o")])
        assert info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_caption_any_method_of_a_transformer_captioner(tmp_path) -> None:
    run = _train(tmp_path, "captioner-tiny", "--model-opt", "decoder_depth=1")
    out = tmp_path / "captions"
    main(["caption", "--checkpoint", str(run), "--images", "scenes", "--n", "2", "--methods",
          "alpha,chefer-mm,gradcam", "--out", str(out), "--quiet"])
    summary = json.loads((out / "captions.json").read_text())
    record = summary["images"][0]
    assert sorted(record["strips"]) == ["alpha", "chefer-mm", "gradcam"]
    assert all((out / path).is_file() for path in record["strips"].values())
    assert "bleu1" in summary["metrics"]


def test_caption_a_hugging_face_captioner_from_its_folder(tmp_path) -> None:
    transformers = pytest.importorskip("transformers", reason="the dev extra installs transformers")
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=48,
                  patch_size=8)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=100,
                max_position_embeddings=32, encoder_hidden_size=32, bos_token_id=98, sep_token_id=99, pad_token_id=0)
    torch.manual_seed(0)
    model = transformers.BlipForConditionalGeneration(transformers.BlipConfig(vision_config=vision, text_config=text))
    folder = tmp_path / "blip"
    model.save_pretrained(folder)
    out = tmp_path / "captions"
    main(["caption", "--model", "hf:BlipForConditionalGeneration", "--weights", str(folder), "--images", "scenes",
          *SCENES, "--n", "2", "--max-len", "3", "--methods", "gradcam,saliency", "--out", str(out), "--quiet"])
    record = json.loads((out / "captions.json").read_text())["images"][1]
    assert 1 <= len(record["words"]) <= 3 and sorted(record["strips"]) == ["gradcam", "saliency"]


def test_the_report_draws_every_methods_strips_and_the_prompt_tokens(tmp_path) -> None:
    clip = _train(tmp_path, "clip-tiny", "--model-opt", "text_dim=16", "--model-opt", "embed_dim=8")
    maps = tmp_path / "maps"
    main(["explain", "--model", str(clip), "--images", "scenes", "--size", "48", "--n", "1", "--text",
          "a red <b>three</b>", "--out", str(maps), "--quiet"])
    captioner = _train(tmp_path, "captioner-tiny", "--model-opt", "decoder_depth=1")
    out = tmp_path / "captions"
    main(["caption", "--checkpoint", str(captioner), "--images", "scenes", "--n", "1", "--methods", "alpha,gradcam",
          "--out", str(out), "--quiet"])
    main(["report", str(out), "--with", str(maps)])
    page = (out / "report.html").read_text()
    assert "Prompt tokens" in page and page.count("<span title=") == 12  # <start>, 10 tokens, <end>
    assert "&lt;unk&gt;" in page and "<b>three</b>" not in page
    assert 'alt="alpha per word"' in page and 'alt="gradcam per word"' in page


def test_explain_texts_of_a_hugging_face_clip_from_its_folder(tmp_path) -> None:
    """--model hf:CLIPModel --weights FOLDER: the model and its tokenizer from a save_pretrained folder, offline."""
    transformers = pytest.importorskip("transformers", reason="the dev extra installs transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    words = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "a", "red", "three", "blue", "seven"]
    vocab = {w: i for i, w in enumerate(words)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(single="[BOS] $A [EOS]", special_tokens=[("[BOS]", 2),
                                                                                               ("[EOS]", 3)])
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]",
                                                     bos_token="[BOS]", eos_token="[EOS]")
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=9,
                max_position_embeddings=16, bos_token_id=2, eos_token_id=3, pad_token_id=0)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=48,
                  patch_size=8)
    torch.manual_seed(0)
    model = transformers.CLIPModel(transformers.CLIPConfig(vision_config=vision, text_config=text, projection_dim=8))
    folder = tmp_path / "clip"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    out = tmp_path / "maps"
    main(["explain", "--model", "hf:CLIPModel", "--weights", str(folder), "--images", "scenes", "--size", "48",
          "--n", "2", "--text", "a red three", "--text", "a blue seven", "--methods", "gradcam,chefer-mm",
          "--token-methods", "inputxgrad,chefer-mm", "--out", str(out), "--quiet"])
    tokens = json.loads((out / "tokens.json").read_text())
    assert [w for w, _ in tokens["methods"]["chefer-mm"][1][0]] == ["[BOS]", "a", "red", "three", "[EOS]"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["kind"] == "transformers" and len(manifest["methods"]) == 4


def test_token_highlights_are_classes_in_tenths_of_the_prompts_largest_value() -> None:
    """The report's Content-Security-Policy refuses inline styles, so a token's shade is a class of TOKEN_CSS."""
    from attnscope.report.assets import CSS
    from attnscope.report.tokens import TOKEN_CSS, highlighted

    spans = highlighted([("a", 2.0), ("<b>", -1.0), ("c", 0.09), ("d", -0.11)])
    assert spans.count('class="tok-') == 4 and "style=" not in spans and "&lt;b&gt;" in spans
    assert [c for c in ("tok-p10", "tok-n5", "tok-p0", "tok-n1") if f'class="{c}"' in spans] == [
        "tok-p10", "tok-n5", "tok-p0", "tok-n1"]
    assert ".tok-n5 { background: rgba(40,80,220,0.5)" in TOKEN_CSS and TOKEN_CSS in CSS


@pytest.mark.parametrize("model", ["clip-tiny", "captioner-tiny"])
def test_train_builds_the_tiny_transformers_for_the_datas_image_size(tmp_path, model) -> None:
    """`attnscope train --model clip-tiny --data scenes` as written: the data's 48 px, not the model's default 64,
    unless --model-opt image_size says otherwise (then the model refuses the data's size in one line)."""
    opts = ["--model-opt", "dim=16", "--model-opt", "depth=1", "--model-opt", "heads=2"]
    main(["train", "--model", model, "--data", "scenes", *SCENES, *opts, "--n", "8", "--n-test", "4", "--epochs", "1",
          "--batch-size", "8", "--out", str(tmp_path / "run"), "--quiet"])
    spec = json.loads((tmp_path / "run" / "model.json").read_text())
    assert spec["model"]["config"]["image_size"] == 48
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--model", model, "--data", "scenes", *SCENES, *opts, "--model-opt", "image_size=64", "--n",
              "8", "--n-test", "4", "--epochs", "1", "--batch-size", "8", "--out", str(tmp_path / "other"), "--quiet"])
    assert exit_.value.code == 2
