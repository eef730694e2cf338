"""Real-ESRGAN weights and architectures: ncnn conversion, the reference runtime, user files."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from hypermosaic import identity
from hypermosaic.errors import InputError
from hypermosaic.identity import ESRGAN_MODELS
from hypermosaic.pipelines import esrgan
from hypermosaic.pipelines.esrgan import ncnn_weights, networks, weights
from hypermosaic.pipelines.esrgan.networks import RRDBNet, SRVGGNetCompact
from hypermosaic.pipelines.esrgan.upscaler import resolve_dtype
from tests.helpers import astronaut, save_srvgg

pytestmark = pytest.mark.usefixtures("hypermosaic_cache", "one_torch_thread")


def _photo_crop(size: int = 32) -> np.ndarray:
    """A real photo crop (face and hair edges), RGB float32 in 0..1."""
    return astronaut(size, size, top=100, left=200).astype(np.float32) / 255.0


def _ncnn_forward(stem: str, image: np.ndarray) -> np.ndarray:
    """The reference: ncnn on CPU, fp32 throughout, output clamped to 0..1 (CHW)."""
    import ncnn

    param, bin_path = esrgan.ncnn_model_files(stem)
    net = ncnn.Net()
    for option in ("use_vulkan_compute", "use_fp16_packed", "use_fp16_storage",
                   "use_fp16_arithmetic", "use_bf16_storage"):
        setattr(net.opt, option, False)
    net.opt.num_threads = 1
    net.load_param(str(param))
    net.load_model(str(bin_path))
    chw = np.ascontiguousarray(image.transpose(2, 0, 1))
    mat = ncnn.Mat(chw)  # ncnn.Mat borrows chw's memory: keep both alive
    extractor = net.create_extractor()
    extractor.input("data", mat)
    status, out = extractor.extract("output")
    assert status == 0
    return np.clip(np.array(out), 0.0, 1.0)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


@pytest.mark.parametrize("name", ["x4plus", "anime", "fast"])
def test_matches_ncnn_reference_runtime(name: str) -> None:
    image = _photo_crop(32)
    upscaler = esrgan.load_upscaler(name, device="cpu", dtype="float32")
    assert upscaler.scale == esrgan.model_scale(name) == 4
    ours = upscaler(torch.from_numpy(image.transpose(2, 0, 1).copy())[None])[0].numpy()
    reference = _ncnn_forward(ESRGAN_MODELS[name].ncnn_stem, image)
    assert ours.shape == reference.shape == (3, 128, 128)
    assert _psnr(ours, reference) >= 80.0


@pytest.mark.parametrize("name", ["x4plus", "fast"])
def test_bfloat16_stays_close_to_the_reference(name: str) -> None:
    """The bfloat16 path (the CPU default where it is native) against ncnn's fp32: far below
    visible error (measured 53.6 dB for x4plus and 55.1 dB for fast), under one uint8 level on
    average (measured 0.4), and handed back as float32."""
    image = _photo_crop(32)
    upscaler = esrgan.load_upscaler(name, device="cpu", dtype="bfloat16")
    assert upscaler.dtype == torch.bfloat16
    assert next(upscaler.model.parameters()).dtype == torch.bfloat16
    ours = upscaler(torch.from_numpy(image.transpose(2, 0, 1).copy())[None])[0].numpy()
    assert ours.dtype == np.float32
    reference = _ncnn_forward(ESRGAN_MODELS[name].ncnn_stem, image)
    assert 50.0 <= _psnr(ours, reference) < 80.0
    assert np.abs(ours - reference).mean() * 255 < 1.0


def test_auto_dtype_follows_the_device() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_dtype("auto", cpu, bf16=True) == torch.bfloat16
    assert resolve_dtype("auto", cpu, bf16=False) == torch.float32
    assert resolve_dtype("auto", cuda, bf16=True) == torch.float16
    assert resolve_dtype("auto", torch.device("mps"), bf16=True) == torch.float32
    assert resolve_dtype("float32", cuda) == torch.float32
    assert resolve_dtype("bfloat16", cpu, bf16=False) == torch.bfloat16
    assert esrgan.load_upscaler("fast", device="cpu").dtype == resolve_dtype("auto", cpu)
    with pytest.raises(InputError, match=r"--dtype: unknown dtype 'half'"):
        resolve_dtype("half", cpu)


def test_conversion_consumes_the_files_exactly(tmp_path: Path) -> None:
    param, bin_path = esrgan.ncnn_model_files("realesrgan-x4plus")
    arrays = ncnn_weights.read_weights(param, bin_path)
    assert len(arrays) == 2 * 351  # conv_first, 23 x 3 x 5 dense convs, body, up1, up2, hr, last
    assert arrays[0].shape == (64, 3, 3, 3) and arrays[-2].shape == (3, 64, 3, 3)
    param, bin_path = esrgan.ncnn_model_files("realesrgan-x4plus-anime")
    arrays = ncnn_weights.read_weights(param, bin_path)
    assert len(arrays) == 2 * (1 + 6 * 3 * 5 + 5)  # 6 RRDB blocks
    assert [a.shape for a in arrays] == [
        tuple(p.shape) for p in networks.make_network(ESRGAN_MODELS["anime"]).parameters()
    ]
    param, bin_path = esrgan.ncnn_model_files("realesr-animevideov3-x4")
    assert len(ncnn_weights.read_weights(param, bin_path)) == 2 * 18 + 17  # convs + PReLUs
    data = bin_path.read_bytes()
    (tmp_path / "short.bin").write_bytes(data[:-4])
    (tmp_path / "long.bin").write_bytes(data + b"\0\0\0\0")
    with pytest.raises(InputError, match="truncated"):
        ncnn_weights.read_weights(param, tmp_path / "short.bin")
    with pytest.raises(InputError, match="4 bytes left"):
        ncnn_weights.read_weights(param, tmp_path / "long.bin")


def test_registry_weights_are_cached_as_safetensors(
    hypermosaic_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = esrgan.load_model("fast").state_dict()
    cached = hypermosaic_cache / "esrgan" / "realesr-animevideov3-x4.safetensors"
    assert cached.is_file()

    def no_conversion(*args: object) -> None:
        raise AssertionError("converted again despite the cache")

    monkeypatch.setattr(weights, "ncnn_state_dict", no_conversion)
    second = esrgan.load_model("fast").state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_a_cache_entry_that_does_not_fit_is_rebuilt(hypermosaic_cache: Path) -> None:
    reference = esrgan.load_model("fast").state_dict()
    cached = hypermosaic_cache / "esrgan" / "realesr-animevideov3-x4.safetensors"
    for damage in ({"other.weight": torch.zeros(2)},  # wrong keys
                   {k: v[..., :1].contiguous() for k, v in reference.items()}):  # wrong shapes
        save_file(damage, cached)
        rebuilt = esrgan.load_model("fast").state_dict()
        assert all(torch.equal(reference[k], rebuilt[k]) for k in reference)
        assert torch.equal(load_file(cached)["body.0.weight"], reference["body.0.weight"])


def test_model_scale_of_a_file_checks_it_without_building_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "user.safetensors"
    save_file(_tiny_models()[1].state_dict(), path)

    built: list[tuple[dict, torch.nn.Module]] = []
    real_build = esrgan.build_model

    def recording_build(state: dict, *args: object, **kwargs: object) -> torch.nn.Module:
        built.append((state, real_build(state, *args, **kwargs)))
        return built[-1][1]

    monkeypatch.setattr(weights, "build_model", recording_build)
    assert esrgan.model_scale(path) == 2
    ((state, model),) = built  # checked once, and built on the meta device: its parameters
    assert all(p.data_ptr() == state[name].data_ptr()  # are the file's tensors, not copies
               for name, p in model.named_parameters())
    state = _tiny_models()[1].state_dict()
    state["conv_last.weight"] = torch.zeros(3, 8, 5, 5)
    save_file(state, path)
    with pytest.raises(InputError, match="weights do not fit the architecture"):
        esrgan.model_scale(path)


def _tiny_models() -> list[torch.nn.Module]:
    torch.manual_seed(0)
    return [
        RRDBNet(num_block=2, num_feat=16, num_grow_ch=8),
        RRDBNet(num_block=1, num_feat=8, num_grow_ch=4, scale=2),
        SRVGGNetCompact(num_feat=8, num_conv=3, upscale=2),
    ]


@pytest.mark.parametrize("index", [0, 1, 2])
@pytest.mark.parametrize("wrapper", ["params_ema", "params", None])
def test_basicsr_state_dicts_load(tmp_path: Path, index: int, wrapper: str | None) -> None:
    model = _tiny_models()[index].eval()
    state = model.state_dict()
    if wrapper == "params_ema":  # basicsr saves both; the EMA weights win
        saved = {"params_ema": state, "params": {k: torch.zeros_like(v) for k, v in state.items()}}
    else:
        saved = {wrapper: state} if wrapper else state
    path = tmp_path / "user.pth"
    torch.save(saved, path)
    loaded = esrgan.load_model(path)
    assert type(loaded) is type(model) and loaded.scale == model.scale
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_safetensors_file_loads_and_upscales(tmp_path: Path) -> None:
    model = _tiny_models()[2].eval()
    path = tmp_path / "user.safetensors"
    save_file(model.state_dict(), path)
    upscaler = esrgan.load_upscaler(path, device="cpu", dtype="float32")
    x = torch.rand(1, 3, 10, 14)
    with torch.no_grad():
        expected = model(x).clamp(0, 1)
    assert upscaler.scale == 2
    assert torch.allclose(upscaler(x), expected, atol=1e-6)


class _NotWeights:
    """Anything but a tensor: a pickle holding it must be refused."""

    def __init__(self) -> None:
        self.payload = "code could run here"


def test_refuses_pickles_that_are_not_plain_weights(tmp_path: Path) -> None:
    objects = tmp_path / "objects.pth"
    torch.save({"params": _tiny_models()[2].state_dict(), "extra": _NotWeights()}, objects)
    with pytest.raises(InputError, match="refused, not plain weights"):
        esrgan.load_model(objects)
    numbers = tmp_path / "numbers.pth"
    torch.save({"conv.weight": [1.0, 2.0]}, numbers)
    with pytest.raises(InputError, match="not a state dict of tensors"):
        esrgan.load_model(numbers)


def test_bad_model_arguments_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--model: unknown model 'x8'"):
        esrgan.load_model("x8")
    with pytest.raises(InputError, match="no such model file"):
        esrgan.load_model(tmp_path / "missing.pth")
    other = tmp_path / "other.safetensors"
    save_file({"encoder.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(InputError, match="not a Real-ESRGAN"):
        esrgan.load_model(other)
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(InputError, match="not a readable safetensors"):
        esrgan.load_model(damaged)


def _zip_of_text(path: Path) -> None:
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "not a checkpoint")


def _srvgg_state(**changes: torch.Tensor) -> dict[str, torch.Tensor]:
    state = _tiny_models()[2].state_dict()
    return {**state, **changes}


# Files named like weights that are not Real-ESRGAN weights: how each is written, what its
# one line says. Before, several raised IndexError, KeyError, ValueError or ZeroDivisionError
# from torch.load or the architecture guess, and integer weights loaded.
FOREIGN_WEIGHTS = {
    "empty.pth": (lambda p: p.write_bytes(b""), "an empty file, not a PyTorch checkpoint"),
    "random.pth": (lambda p: p.write_bytes(b"\x13" + np.random.default_rng(0).bytes(4095)),
                   "not a PyTorch checkpoint (neither a zip archive nor a pickle"),
    "text.pth": (lambda p: p.write_text("hello\n"), "not a PyTorch checkpoint"),
    "byte.pth": (lambda p: p.write_bytes(b"\x80"), "not a readable PyTorch checkpoint (a pickle"),
    "zip.pth": (_zip_of_text, "not a readable PyTorch checkpoint (a zip archive"),
    "pickle.pth": (lambda p: p.write_bytes(pickle.dumps({"a": 1})),
                   "not a readable PyTorch checkpoint"),
    "numbers.pth": (lambda p: torch.save({"a": 1, "b": "x"}, p),
                    "not a state dict of tensors ('a': int, not a tensor)"),
    "empty-dict.pth": (lambda p: torch.save({}, p), "not a state dict of tensors (it holds an "
                       "empty dict)"),
    "other.pth": (lambda p: torch.save(torch.nn.Conv2d(3, 8, 3).state_dict(), p),
                  "not a Real-ESRGAN RRDBNet or SRVGGNetCompact state dict"),
    "rrdb-2d.safetensors": (
        lambda p: save_file({"conv_first.weight": torch.zeros(8, 3),
                             "body.0.rdb1.conv1.weight": torch.zeros(4)}, p),
        "conv_first.weight is of shape (8, 3), not a convolution weight"),
    "rrdb-no-last.safetensors": (
        lambda p: save_file({"conv_first.weight": torch.zeros(8, 3, 3, 3),
                             "body.0.rdb1.conv1.weight": torch.zeros(4, 8, 3, 3)}, p),
        "conv_last.weight is missing"),
    "rrdb-grey.safetensors": (
        lambda p: save_file({**_tiny_models()[0].state_dict(),
                             "conv_last.weight": torch.zeros(1, 16, 3, 3)}, p),
        "RRDBNet with 1 output channels is not RGB"),
    "srvgg-empty.safetensors": (
        lambda p: save_file(_srvgg_state(**{"body.0.weight": torch.zeros(8, 0, 3, 3)}), p),
        "body.0.weight is of shape (8, 0, 3, 3)"),
    "srvgg-odd.safetensors": (
        lambda p: save_file(_srvgg_state(**{"body.8.weight": torch.zeros(10, 8, 3, 3)}), p),
        "SRVGGNetCompact from 3 channels to 10 is not RGB to RGB"),
    "integers.safetensors": (
        lambda p: save_file(_srvgg_state(**{"body.0.weight": torch.zeros(8, 3, 3, 3,
                                                                         dtype=torch.int64)}), p),
        "body.0.weight holds int64 values, not floating-point weights"),
    "nan.safetensors": (
        lambda p: save_file(_srvgg_state(**{"body.0.bias": torch.full((8,), float("nan"))}), p),
        "body.0.bias holds NaN or infinite weights"),
    "text.safetensors": (lambda p: p.write_text("hello"), "not a readable safetensors file"),
}


@pytest.mark.parametrize("name", FOREIGN_WEIGHTS)
def test_foreign_weights_files_are_one_input_error_naming_the_file(name: str,
                                                                   tmp_path: Path) -> None:
    write, message = FOREIGN_WEIGHTS[name]
    path = tmp_path / name
    write(path)
    for check in (esrgan.describe_upscaler, esrgan.load_model):
        with pytest.raises(InputError) as error:
            check(str(path))
        assert str(error.value).startswith(f"{path}: ") and message in str(error.value)
        assert "\n" not in str(error.value)


def test_registry_weights_convert_once_reporting_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``describe_upscaler(on_weights=...)`` converts a registry model's weights up front,
    one tick per weight array (so that a bar, not silence, covers the first use); later loads
    read the cache."""
    monkeypatch.setenv("HYPERMOSAIC_CACHE", str(tmp_path / "cache"))
    seen: list[tuple[int, int]] = []
    assert esrgan.describe_upscaler("fast", "cpu", lambda *tick: seen.append(tick)) == (4, 256)
    assert seen == [(done, 53) for done in range(54)]  # 18 convolutions, their biases, PReLUs
    assert (tmp_path / "cache" / "esrgan" / "realesr-animevideov3-x4.safetensors").is_file()

    def no_conversion(*args: object, **kwargs: object) -> None:
        raise AssertionError("converted again despite the cache")

    monkeypatch.setattr(weights, "ncnn_state_dict", no_conversion)
    seen.clear()
    esrgan.describe_upscaler("fast", "cpu", lambda *tick: seen.append(tick))
    esrgan.load_upscaler("fast", device="cpu")
    assert seen == []


def test_a_cache_that_cannot_be_written_only_means_converting_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("HYPERMOSAIC_CACHE", str(tmp_path / "a-file" / "cache"))
    reference = _ncnn_forward("realesr-animevideov3-x4", _photo_crop(16))
    upscaler = esrgan.load_upscaler("fast", device="cpu", dtype="float32")
    ours = upscaler(torch.from_numpy(_photo_crop(16).transpose(2, 0, 1).copy())[None])[0]
    assert _psnr(ours.numpy(), reference) >= 80.0


def test_bad_ncnn_files_are_an_input_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.param"
    bad.write_text("1234\n0 0\n")
    with pytest.raises(InputError, match="not an ncnn .param"):
        ncnn_weights.read_param(bad)
    param, bin_path = esrgan.ncnn_model_files("realesr-animevideov3-x4")
    lines = param.read_text().split("\n")
    conv = next(i for i, line in enumerate(lines) if line.startswith("Convolution"))
    broken = {
        "binary.param": (b"7767517\n\xff\xfe\x00", "not text"),
        "short.param": ("\n".join([*lines[:conv], "Convolution conv0 x", *lines[conv + 1 :]]),
                        f"line {conv + 1}: not an ncnn layer line"),
        "noparam.param": ("\n".join([*lines[:conv], lines[conv].replace(" 6=", " 16="),
                                      *lines[conv + 1 :]]), "bad or missing parameter 6"),
    }
    for name, (content, message) in broken.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        with pytest.raises(InputError, match=message) as error:
            ncnn_weights.read_weights(path, bin_path)
        assert str(error.value).startswith(f"{path}: ")
    with pytest.raises(InputError, match="not found"):
        esrgan.ncnn_model_files("realesrgan-x16")


@pytest.fixture()
def cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """``auto`` resolves to the CPU, whatever this machine has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_auto_is_cuda_else_the_cpu_never_mps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real-ESRGAN's own rule for the upscale command: MPS convolutions would change bytes."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    from hypermosaic.pipelines.esrgan.upscaler import resolve_device

    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.usefixtures("cpu_only")
def test_describe_upscaler_checks_weights_without_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert esrgan.describe_upscaler("x4plus") == (4, 256)
    assert esrgan.describe_upscaler(str(save_srvgg(tmp_path / "x2.safetensors", 2))) == (2, 256)
    monkeypatch.setitem(identity.ESRGAN_MODELS, "x16",
                        identity.EsrganModel("realesrgan-x16", "rrdb", 23, 16))
    with pytest.raises(InputError, match=r"realesrgan-x16\.param/\.bin not found"):
        esrgan.describe_upscaler("x16")
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(InputError, match="not a readable safetensors"):
        esrgan.describe_upscaler(str(damaged))


@pytest.mark.usefixtures("cpu_only")
def test_init_upscalers_follow_the_diffusion_dtype_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``auto`` for a build's inits is float32 on any CPU (as diffusion's); the upscale
    command's own ``auto`` takes bfloat16 where the CPU has it natively."""
    from hypermosaic.pipelines.esrgan import upscaler

    path = save_srvgg(tmp_path / "x2.safetensors", 2)
    for bf16 in (True, False):
        monkeypatch.setattr(upscaler, "native_bf16", lambda bf16=bf16: bf16)
        own = esrgan.load_upscaler(path)
        init = esrgan.load_upscaler(path, init=True)
        assert own.device == init.device == torch.device("cpu")
        assert own.dtype == resolve_dtype("auto", torch.device("cpu"))
        assert own.dtype == (torch.bfloat16 if bf16 else torch.float32)
        assert init.dtype == torch.float32
        assert own.tile == init.tile == 256
    assert esrgan.load_upscaler(path, device="cpu", dtype="bfloat16", init=True).dtype == (
        torch.bfloat16
    )
    assert esrgan.load_upscaler(path, device="cpu", tile=48).tile == 48
    with pytest.raises(InputError, match="--device: unknown device 'gpu0'"):  # the command's
        esrgan.load_upscaler(path, device="gpu0")
    with pytest.raises(InputError, match="diffusion.device: unknown device 'gpu0'"):
        esrgan.load_upscaler(path, device="gpu0", init=True)
    with pytest.raises(InputError, match="--dtype: unknown dtype 'half'"):
        esrgan.load_upscaler(path, device="cpu", dtype="half")
    with pytest.raises(InputError, match="diffusion.dtype: unknown dtype 'fp8'"):
        esrgan.load_upscaler(path, device="cpu", dtype="fp8", init=True)


def test_registry_networks_follow_identity() -> None:
    """Each `hypermosaic.identity.ESRGAN_MODELS` entry builds its network, depth and scale."""
    for name, model in ESRGAN_MODELS.items():
        network = networks.make_network(model)
        assert type(network) is networks.ARCHITECTURES[model.arch][0]
        assert network.scale == model.scale == esrgan.model_scale(name)
    assert len(networks.make_network(ESRGAN_MODELS["anime"]).body) == 6
    assert sum(isinstance(m, torch.nn.Conv2d)
               for m in networks.make_network(ESRGAN_MODELS["fast"]).body) == 16 + 2
