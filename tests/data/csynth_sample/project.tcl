variable project_name
set project_name "jetdeploy_tagger"
variable backend
set backend "vitis"
variable part
set part "xcvu13p-flga2577-2-e"
variable clock_period
set clock_period 5.0
