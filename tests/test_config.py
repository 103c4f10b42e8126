import pytest

from jetdeploy.config import DataConfig, configs_dir, load_data_config, load_yaml_model
from jetdeploy.errors import JetDeployError


@pytest.mark.parametrize("preset,per_class", [("tiny", 20), ("default", 2000), ("full", 20000)])
def test_shipped_presets_load(preset, per_class):
    cfg = load_data_config(preset)
    assert cfg.name == preset
    assert cfg.jets_per_class == per_class
    assert cfg.jets.radius == 0.8 and cfg.jets.pt_min_gev == 800 and cfg.jets.pt_max_gev == 1200
    assert (configs_dir() / "data" / f"{preset}.yaml").exists()


def test_unknown_key_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\njets_per_class: 2\nshard_size: 1\njets:\n  radious: 0.4\n")
    with pytest.raises(JetDeployError) as e:
        load_yaml_model(path, DataConfig)
    msg = str(e.value)
    assert str(path) in msg and "jets.radious" in msg and "unknown key" in msg


def test_bad_value_names_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\njets_per_class: -5\nshard_size: 1\n")
    with pytest.raises(JetDeployError, match="jets_per_class"):
        load_yaml_model(path, DataConfig)


def test_inconsistent_window_is_an_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\njets_per_class: 2\nshard_size: 1\njets: {pt_min_gev: 900, pt_max_gev: 800}\n")
    with pytest.raises(JetDeployError, match="pt_max_gev must be above pt_min_gev"):
        load_yaml_model(path, DataConfig)


def test_malformed_yaml_and_unknown_preset(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(JetDeployError, match="not valid YAML"):
        load_yaml_model(path, DataConfig)
    with pytest.raises(JetDeployError, match="unknown data preset 'huge'.*default"):
        load_data_config("huge")


def test_act_rounding_is_for_the_fixed_point_scheme_only():
    from jetdeploy.config import load_train_config

    assert load_train_config("fpga16", ["quant.act_rounding=floor"]).quant.act_rounding == "floor"
    with pytest.raises(JetDeployError, match="act_rounding 'floor' is for scheme 'fpga'"):
        load_train_config("fpga16", ["quant.act_rounding=floor", "quant.scheme=int8", "quant.weight_bits=8",
                                     "quant.overrides={}", "quant.bias_bits=32"])
    # int8 stores int8: 7-bit weights (no u8 x s8 saturation without VNNI) or 8, nothing narrower
    assert load_train_config("fpga16", ["quant.scheme=int8", "quant.weight_bits=7", "quant.act_bits=8",
                                        "quant.overrides={'*.k_quant': 7}", "quant.bias_bits=32"]).quant.weight_bits == 7
    with pytest.raises(JetDeployError, match="weight_bits 7 or 8"):
        load_train_config("fpga16", ["quant.scheme=int8", "quant.weight_bits=6", "quant.act_bits=8",
                                     "quant.overrides={}", "quant.bias_bits=32"])
    # the float run of a floor preset (make train's first step) has no quantizers: allowed
    assert load_train_config("fpga16", ["quant.act_rounding=floor", "quant.scheme=float"]).quant.scheme == "float"
    with pytest.raises(JetDeployError, match="act_rounding"):
        load_train_config("fpga16", ["quant.act_rounding=nearest"])


@pytest.mark.parametrize("preset", ["default", "fpga16", "fpga16l", "edge32", "edge64"])
def test_shipped_training_presets_load(preset):
    from jetdeploy.config import load_train_config

    cfg = load_train_config(preset)
    assert cfg.name == preset
    if preset == "fpga16l":   # the low-latency recipe of the RTL design study
        assert (cfg.model.blocks, cfg.model.attention, cfg.model.norm, cfg.quant.act_rounding) == \
            (1, "sigmoid", "none", "floor")
