"""Imports every built-in tool module so that its ``@register_tool`` runs."""

import eis.tools.attribution  # noqa: F401  (attribution methods)
import eis.tools.circuits.acdc  # noqa: F401  (circuit discovery)
import eis.tools.circuits.controls  # noqa: F401
import eis.tools.circuits.gradients  # noqa: F401
import eis.tools.circuits.patching  # noqa: F401
import eis.tools.controls  # noqa: F401  (edge detector, random and blank maps)
import eis.tools.detection.baselines  # noqa: F401
import eis.tools.detection.mntd  # noqa: F401
import eis.tools.detection.neural_cleanse  # noqa: F401
import eis.tools.detection.strip  # noqa: F401
import eis.tools.features.baselines  # noqa: F401  (feature finding: SAEs, probes, baselines)
import eis.tools.features.sae  # noqa: F401
import eis.tools.lm_detect.controls  # noqa: F401  (model-level detection for language models)
import eis.tools.lm_detect.mntd  # noqa: F401
import eis.tools.lm_detect.trigger_scan  # noqa: F401
import eis.tools.lm_elicit.finetune  # noqa: F401  (eliciting a password-locked capability)
import eis.tools.lm_elicit.prompt_search  # noqa: F401
import eis.tools.lm_elicit.steering  # noqa: F401
import eis.tools.lm_trigger.controls  # noqa: F401  (trigger recovery for language models)
import eis.tools.lm_trigger.gbda  # noqa: F401
import eis.tools.lm_trigger.gcg  # noqa: F401
import eis.tools.lm_trigger.pez  # noqa: F401
import eis.tools.lm_trigger.uat  # noqa: F401
import eis.tools.repair.anp  # noqa: F401  (trojan removal)
import eis.tools.repair.finetune  # noqa: F401
import eis.tools.repair.pruning  # noqa: F401
import eis.tools.repair.unlearning  # noqa: F401
import eis.tools.rule_recovery.controls  # noqa: F401  (secret-rule recovery)
import eis.tools.rule_recovery.whitebox  # noqa: F401
import eis.tools.synthesis.adversarial_patch  # noqa: F401  (feature synthesis)
import eis.tools.synthesis.controls  # noqa: F401
import eis.tools.synthesis.feature_adversary  # noqa: F401
import eis.tools.synthesis.feature_viz  # noqa: F401
import eis.tools.synthesis.inversion  # noqa: F401
