"""Shadow calibration: track records measured on models like the user's (same factory, same data).

    from eis.shadows import ShadowRecipe, UserArch, calibrate_shadows

    run = calibrate_shadows(UserArch.of("my_pkg.nets:make"), train_x, train_y, x, y,
                            num_classes=10, user_accuracy=0.97, recipe=ShadowRecipe(shadows=8))
    report = eis.audit.audit(model, x, y, calibration=run.table)

``eis audit ... --shadows N`` and ``eis calibrate --shadows N`` do the same from the command line.
"""

from eis.shadows.calibrate import ShadowRun, calibrate_shadows, p_value, shadow_table
from eis.shadows.recipe import KINDS, ShadowRecipe
from eis.shadows.setup import UserArch

__all__ = ["KINDS", "ShadowRecipe", "ShadowRun", "UserArch", "calibrate_shadows", "p_value", "shadow_table"]
