"""User control through the public API and the tools: a user dictionary and g2pW reach the GPT.

`TTS.load(..., user_dict=..., g2pw_dir=...)` (or `FrontendOptions`), `gsv say/voice create
--user-dict/--g2pw` and the server's `user_dict`/`g2pw` settings. Bad files and directories fail
at load with a `TextError` (CLI: one line, exit 2).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from test_cli_say import assert_one_line_error, say, voice_file  # noqa: F401  (fixture re-used)
from test_tts import speak_env, write_reference  # noqa: F401  (fixture re-used)

from gsv_onnx.cli import main
from gsv_onnx.errors import GsvError, OptionsError, TextError
from gsv_onnx.runtime.decoder import GptDecoder
from gsv_onnx.runtime.options import FrontendOptions
from gsv_onnx.runtime.tts import TTS
from gsv_onnx.runtime.voice import Voice
from gsv_onnx.text import UserDictionary

EN_TEXT = "I will read the book."
ZH_TEXT = "他在银行工作。"


@pytest.fixture(scope="module")
def dict_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("dict") / "words.tsv"
    path.write_text("# my words\nread\tR EH1 D\n银行\tyin2 xing2\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def plain(speak_env):  # noqa: F811
    return TTS.load(speak_env.bundle)


@pytest.fixture(scope="module")
def with_dict(speak_env, dict_file):  # noqa: F811
    return TTS.load(speak_env.bundle, user_dict=dict_file)


def _prefill_phones(tts, monkeypatch, run):
    """The phone ids each GPT prefill receives while `run()` synthesizes."""
    seen = []
    prefill = GptDecoder.prefill

    def recording(decoder, phone_ids, *args, **kwargs):
        seen.append(np.asarray(phone_ids).reshape(-1).copy())
        return prefill(decoder, phone_ids, *args, **kwargs)

    monkeypatch.setattr(GptDecoder, "prefill", recording)
    run()
    monkeypatch.undo()
    return seen


def test_user_dictionary_changes_the_phones(plain, with_dict, dict_file):
    before = plain.text_to_phones(EN_TEXT, "en")
    after = with_dict.text_to_phones(EN_TEXT, "en")
    assert "IY1" in before.phones and "EH1" not in before.phones
    assert "EH1" in after.phones and "IY1" not in after.phones
    assert with_dict.frontend_options.user_dict == dict_file
    zh_before = plain.text_to_phones(ZH_TEXT, "zh")
    zh_after = with_dict.text_to_phones(ZH_TEXT, "zh")
    assert "ang2" in zh_before.phones and "ing2" in zh_after.phones
    # BERT features stay aligned with the phones the dictionary produced
    assert zh_after.bert.shape == (1024, zh_after.n_phones)
    # a loaded UserDictionary and FrontendOptions do the same
    loaded = UserDictionary.load(dict_file)
    assert loaded.entries["read"] == "R EH1 D"
    assert FrontendOptions(user_dict=loaded).user_dict is loaded


def test_user_dictionary_reaches_the_gpt(plain, with_dict, speak_env, monkeypatch):  # noqa: F811
    voice = with_dict.prepare_voice(speak_env.ref, text="参考音频说的话", lang="zh")
    expected = with_dict.text_to_phones(EN_TEXT, "en").phone_ids
    prompt = voice.prompt_phone_ids.shape[0]
    fed = _prefill_phones(
        with_dict, monkeypatch, lambda: with_dict.synthesize(EN_TEXT, voice, lang="en", seed=1)
    )
    assert len(fed) >= 1 and np.array_equal(fed[0][prompt:], expected)
    fed_plain = _prefill_phones(
        plain, monkeypatch, lambda: plain.synthesize(EN_TEXT, voice, lang="en", seed=1)
    )
    assert not np.array_equal(fed_plain[0][prompt:], expected)
    # streaming goes through the same frontend
    fed_stream = _prefill_phones(
        with_dict, monkeypatch, lambda: list(with_dict.stream(EN_TEXT, voice, lang="en", seed=1))
    )
    assert np.array_equal(fed_stream[0][prompt:], expected)


def test_user_dictionary_applies_to_the_reference_transcript(plain, with_dict, speak_env):  # noqa: F811
    text = "他在银行工作"
    voice_plain = plain.prepare_voice(speak_env.ref, text=text, lang="zh")
    voice_dict = with_dict.prepare_voice(speak_env.ref, text=text, lang="zh")
    assert "ang2" in voice_plain.prompt_phones and "ing2" in voice_dict.prompt_phones


def test_markup_can_be_switched_off(speak_env):  # noqa: F811
    literal = TTS.load(speak_env.bundle, frontend=FrontendOptions(markup=False))
    marked = TTS.load(speak_env.bundle)
    text = "I will {read|R EH1 D} it. [pause:0.5] Done."
    assert "EH1" in marked.text_to_phones(text, "en").phones
    assert marked.text_to_phones(text, "en").pauses
    units = literal.text_to_phones(text, "en")
    assert "IY1" in units.phones and not units.pauses


@pytest.mark.parametrize(
    "name, content, needle",
    [
        ("bad.tsv", "read R EH1 D\n", "expected 'word<TAB>pronunciation'"),
        ("bad.json", "{not json", "not valid JSON"),
        ("list.json", json.dumps(["read"]), "JSON object"),
        ("latin1.tsv", "caf\xe9\tK AE1 F\n".encode("latin-1"), "UTF-8"),
    ],
)
def test_bad_dictionary_files_are_text_errors(speak_env, tmp_path, name, content, needle):  # noqa: F811
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    with pytest.raises(TextError, match=needle):
        TTS.load(speak_env.bundle, user_dict=path)


def test_missing_dictionary_and_bad_g2pw_dir(speak_env, tmp_path):  # noqa: F811
    with pytest.raises(TextError, match="does not exist"):
        TTS.load(speak_env.bundle, user_dict=tmp_path / "nowhere.tsv")
    with pytest.raises(TextError, match="g2pW model directory"):
        TTS.load(speak_env.bundle, g2pw_dir=tmp_path / "nowhere")
    with pytest.raises(TextError, match="lacks"):
        TTS.load(speak_env.bundle, g2pw_dir=tmp_path)  # a directory, but no G2PWModel
    with pytest.raises(OptionsError):
        FrontendOptions(user_dict=42)


def test_damaged_g2pw_graph_is_a_text_error(speak_env, tmp_path):  # noqa: F811
    for name in ("POLYPHONIC_CHARS.txt", "MONOPHONIC_CHARS.txt"):
        (tmp_path / name).write_text("行\tㄏㄤ2\n", encoding="utf-8")
    (tmp_path / "bopomofo_to_pinyin_wo_tune_dict.json").write_text("{}", encoding="utf-8")
    (tmp_path / "g2pW.onnx").write_bytes(b"not an onnx graph")
    with pytest.raises(GsvError, match="g2pW"):
        TTS.load(speak_env.bundle, g2pw_dir=tmp_path)


def test_g2pw_model_reaches_the_phones(speak_env, tmp_path):  # noqa: F811
    pytest.importorskip("onnx")
    pytest.importorskip("opencc")
    from test_text_g2pw import _build

    _build(tmp_path)
    tts = TTS.load(speak_env.bundle, g2pw_dir=tmp_path)
    units = tts.text_to_phones("银行行长很忙。", "zh")
    assert units.phones[2:4] == ["x", "ing2"]
    assert tts.frontend.g2pw is not None and tts.frontend.g2pw.runs >= 1


def test_say_with_user_dict(speak_env, voice_file, dict_file, tmp_path, capsys):  # noqa: F811
    plain_out, dict_out = tmp_path / "plain.wav", tmp_path / "dict.wav"
    common = ("--voice", str(voice_file), "--lang", "en", "--seed", "3", "--quiet")
    assert say(speak_env, EN_TEXT, *common, "-o", str(plain_out)) == 0
    assert say(speak_env, EN_TEXT, *common, "-o", str(dict_out), "--user-dict", str(dict_file)) == 0
    plain_audio, rate = sf.read(plain_out, dtype="int16")
    dict_audio, _ = sf.read(dict_out, dtype="int16")
    assert rate == 32000 and dict_audio.size > 0
    assert plain_audio.shape != dict_audio.shape or not np.array_equal(plain_audio, dict_audio)
    capsys.readouterr()
    bad = tmp_path / "bad.tsv"
    bad.write_text("no tab here\n", encoding="utf-8")
    missing_out = tmp_path / "never.wav"
    code = say(speak_env, EN_TEXT, *common, "-o", str(missing_out), "--user-dict", str(bad))
    assert code == 2 and not missing_out.exists()
    assert_one_line_error(capsys, "bad.tsv")
    code = say(speak_env, EN_TEXT, *common, "-o", str(missing_out), "--g2pw", str(tmp_path / "no-model"))
    assert code == 2 and not missing_out.exists()
    assert_one_line_error(capsys, "g2pW")


def test_voice_create_with_user_dict(speak_env, dict_file, tmp_path):  # noqa: F811
    out = tmp_path / "dict.voice"
    code = main(
        [
            "voice", "create", str(speak_env.ref), "--text", "他在银行工作", "--lang", "zh",
            "-o", str(out), "--bundle", str(speak_env.bundle), "--user-dict", str(dict_file),
        ]
    )  # fmt: skip
    assert code == 0
    assert "ing2" in Voice.load(out).prompt_phones


def test_server_settings_size_the_pool_and_load_the_dictionary(speak_env, dict_file, tmp_path):  # noqa: F811
    pytest.importorskip("fastapi")
    from gsv_onnx.server.app import create_app
    from gsv_onnx.server.config import ServerConfig

    config = ServerConfig.load(
        None,
        env={"GSV_USER_DICT": str(dict_file)},
        bundle=str(speak_env.bundle),
        voices=str(tmp_path / "voices"),
        workers=3,
    )
    assert config.user_dict == str(dict_file) and config.g2pw is None
    app = create_app(config)
    tts = app.state.tts
    assert tts.decoders.size == 3 and tts.decoders.created == 1
    assert "EH1" in tts.text_to_phones(EN_TEXT, "en").phones
    bad = ServerConfig(bundle=str(speak_env.bundle), voices=str(tmp_path / "v2"), g2pw=str(tmp_path))
    with pytest.raises(TextError, match="g2pW"):
        create_app(bad)
