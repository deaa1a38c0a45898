"""Feature networks for evaluation: the FID Inception-v3 (random weights here) and the digits classifier."""

from __future__ import annotations

import pytest
import torch

from dimdiff.data import DatasetName, Split, load_dataset
from dimdiff.metrics.digits_classifier import (
    DIGITS_CLASSIFIER_WEIGHTS,
    accuracy,
    classifier_confidence,
    load_digits_classifier,
    predict_logits,
    predicted_label_histogram,
    read_metadata,
)
from dimdiff.metrics.inception import (
    FID_WEIGHTS_FILENAME,
    FID_WEIGHTS_SHA256,
    INCEPTION_WEIGHTS_ENV,
    FeatureNetworkError,
    FIDInceptionV3,
    file_sha256,
    load_fid_inception,
    pool_3x3_same,
)

# Keys of pytorch-fid's pt_inception-2015-12-05-6726825d.pth (torchvision's Inception3 names).
PYTORCH_FID_KEYS = [
    "Conv2d_1a_3x3.conv.weight",
    "Conv2d_1a_3x3.bn.running_mean",
    "Conv2d_4a_3x3.bn.running_var",
    "Mixed_5b.branch1x1.conv.weight",
    "Mixed_5b.branch5x5_2.bn.weight",
    "Mixed_6a.branch3x3dbl_3.conv.weight",
    "Mixed_6e.branch7x7dbl_5.bn.bias",
    "Mixed_7a.branch7x7x3_4.conv.weight",
    "Mixed_7b.branch3x3dbl_3b.bn.running_mean",
    "Mixed_7c.branch_pool.conv.weight",
    "fc.weight",
    "fc.bias",
]
# torchvision documents 27,161,264 parameters for inception_v3 with its aux head and 1000 classes;
# without the aux head (3,326,696) and with the TF graph's 1008-way fc (+8 * 2049):
FID_INCEPTION_PARAMETERS = 27_161_264 - 3_326_696 + 8 * 2049


@pytest.fixture(scope="module")
def inception() -> FIDInceptionV3:
    torch.manual_seed(0)
    return FIDInceptionV3().eval()


@pytest.fixture(scope="module")
def digits_classifier():
    return load_digits_classifier()


@pytest.mark.parametrize("channels", [1, 3])
def test_inception_gives_2048_pool3_features(inception: FIDInceptionV3, channels: int) -> None:
    x = torch.rand(2, channels, 32, 32, generator=torch.Generator().manual_seed(channels)) * 2 - 1
    with torch.no_grad():
        features = inception(x)
    assert features.shape == (2, 2048)
    assert torch.isfinite(features).all()


def test_inception_names_and_parameter_count_match_pytorch_fid(inception: FIDInceptionV3) -> None:
    keys = set(inception.state_dict())
    assert [key for key in PYTORCH_FID_KEYS if key not in keys] == []
    assert not any(key.startswith("AuxLogits") for key in keys)
    assert inception.fc.weight.shape == (1008, 2048)
    assert inception.Conv2d_1a_3x3.bn.eps == pytest.approx(0.001)
    assert sum(p.numel() for p in inception.parameters()) == FID_INCEPTION_PARAMETERS == 23_850_960


def test_inception_pool_branches_follow_the_tf_graph(inception: FIDInceptionV3) -> None:
    assert (inception.Mixed_7b.pool, inception.Mixed_7c.pool) == ("avg", "max")
    ones = torch.ones(1, 1, 5, 5)
    assert torch.equal(pool_3x3_same(ones, "avg"), ones)  # padding is not counted: corners stay 1
    ramp = torch.arange(25.0).reshape(1, 1, 5, 5)
    assert pool_3x3_same(ramp, "max")[0, 0, 0, 0] == 6.0


def test_inception_rejects_malformed_input(inception: FIDInceptionV3) -> None:
    with pytest.raises(FeatureNetworkError, match=r"expected images \(N, 1 or 3, H, W\), got shape \(2, 2, 8, 8\)"):
        inception(torch.zeros(2, 2, 8, 8))


def test_inception_state_dict_loads_strictly_with_its_sha256(inception: FIDInceptionV3, tmp_path) -> None:
    path = tmp_path / "inception.pth"
    torch.save(inception.state_dict(), path)
    loaded = load_fid_inception(path, expected_sha256=file_sha256(path))
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    for key, value in inception.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    with pytest.raises(FeatureNetworkError) as error:  # the published digest does not match a random net
        load_fid_inception(path)
    message = str(error.value)
    assert FID_WEIGHTS_SHA256 in message and file_sha256(path) in message and FID_WEIGHTS_FILENAME in message


def test_inception_weights_with_wrong_keys_or_bytes_fail_clearly(inception: FIDInceptionV3, tmp_path) -> None:
    state = dict(inception.state_dict())
    del state["fc.bias"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(FeatureNetworkError, match="fc.bias"):
        load_fid_inception(path, expected_sha256=file_sha256(path))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(FeatureNetworkError, match="cannot read Inception weights"):
        load_fid_inception(junk, expected_sha256=file_sha256(junk))


def test_missing_inception_weights_say_which_file_to_get(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(INCEPTION_WEIGHTS_ENV, raising=False)
    for path in (None, tmp_path / "absent.pth"):
        with pytest.raises(FeatureNetworkError) as error:
            load_fid_inception(path)
        message = str(error.value)
        for part in (FID_WEIGHTS_FILENAME, "pytorch-fid", "--inception-weights", INCEPTION_WEIGHTS_ENV):
            assert part in message
    monkeypatch.setenv(INCEPTION_WEIGHTS_ENV, str(tmp_path / "from_env.pth"))
    with pytest.raises(FeatureNetworkError, match=r"from_env\.pth .*does not exist"):
        load_fid_inception()


def test_digits_classifier_reaches_97_percent_on_held_out_split(digits_classifier) -> None:
    test_set = load_dataset(DatasetName.DIGITS, resolution=16, split=Split.TEST)
    logits = predict_logits(digits_classifier, test_set.tensor)
    assert accuracy(logits, test_set.labels) >= 0.97
    assert float(read_metadata(DIGITS_CLASSIFIER_WEIGHTS)["test_accuracy"]) >= 0.97


def test_digits_classifier_is_small(digits_classifier) -> None:
    assert sum(p.numel() for p in digits_classifier.parameters()) < 100_000
    assert DIGITS_CLASSIFIER_WEIGHTS.stat().st_size < 500_000
    assert not digits_classifier.training


@pytest.mark.parametrize("resolution", [8, 16, 32])
@pytest.mark.parametrize("channels", [1, 3])
def test_digits_features_at_any_resolution(digits_classifier, resolution: int, channels: int) -> None:
    data = load_dataset(DatasetName.DIGITS, resolution=resolution, channels=channels, split=Split.TEST)
    with torch.no_grad():
        features = digits_classifier.features(data.tensor[:50])
    assert features.shape == (50, digits_classifier.feature_dim) == (50, 64)
    assert torch.isfinite(features).all()
    assert accuracy(predict_logits(digits_classifier, data.tensor), data.labels) >= 0.95


def test_digits_classifier_rejects_malformed_input(digits_classifier) -> None:
    with pytest.raises(FeatureNetworkError, match=r"got shape \(2, 1, 16, 8\)"):
        digits_classifier.features(torch.zeros(2, 1, 16, 8))
    with pytest.raises(FeatureNetworkError, match="got dtype torch.uint8"):
        digits_classifier(torch.zeros(2, 1, 16, 16, dtype=torch.uint8))


def test_confidence_and_label_histogram() -> None:
    assert classifier_confidence(torch.zeros(4, 10)) == pytest.approx(0.1)
    assert classifier_confidence(torch.eye(10) * 100) == pytest.approx(1.0)
    logits = torch.nn.functional.one_hot(torch.tensor([0, 0, 3, 9]), 10).float()
    histogram = predicted_label_histogram(logits)
    assert histogram.tolist() == [0.5, 0, 0, 0.25, 0, 0, 0, 0, 0, 0.25]
