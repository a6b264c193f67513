"""Spatial Transformer Networks (Jaderberg et al., NIPS 2015) in JAX/Flax: the library.

The functions and classes a model uses are here at the top level (``stn.sample``,
``stn.affine_grid``, ``stn.SpatialTransformer``, ...); each lives in a module of its topic, which
also holds the helpers and constants (``stn.transforms.get``, ``stn.sampling.PADDINGS``):

* ``stn.sampling``: the sampler, ``sample(image, grid, kernel=..., padding=...)`` (eqs. 3-7);
* ``stn.transforms``: parameterisations -> sampling grids (affine, attention, projective, TPS,
  dense displacement fields; 2-D and 3-D) (section 3.2);
* ``stn.kernels``: separable sampling kernels ``k(d; Phi)`` with differentiable ``Phi``;
* ``stn.warps``: pixel-space warps as kornia and OpenCV write them (``warp_affine``,
  ``warp_perspective``, ``crop_and_resize``, rotation/shear/translation matrices, TPS through
  arbitrary points), on the same sampler;
* ``stn.boxes``: boxes in normalised coordinates and their overlap;
* ``stn.layers``: Flax NNX localisation nets, ``SpatialTransformer``, ``FlowTransformer``;
* ``stn.backbones``: pretrained backbones with the importers of their published weights.

The paper's experiment harness is ``stn.experiments`` (it needs the ``experiments`` extra); this
package never imports it.
"""

__version__ = "0.2.0"

from stn.boxes import (attention_box, box_attention, covered_fraction, intersection_area, iou,
                       pixel_box)
from stn.kernels import Gaussian, Kernel, Keys, Linear, Nearest, Stretched
from stn.layers import (ConvLocNet, ConvLocNet3D, FlowNet, FlowTransformer, Frozen,
                        FullyConnectedLocNet, LocalisationNet, ParallelTransformers,
                        RegressionLayer, ReluStack, SamplingKernel, SerialTransformers,
                        SpatialTransformer, freeze, localisation_paths, regression_layer,
                        regression_paths)
from stn.sampling import axis_kernels, default_max_scale, sample, unnormalize
from stn.transforms import (Transform, affine_grid, attention_to_affine, base_grid,
                            compose_affine, compose_displacements, displacement_grid,
                            integrate_velocity, projective_grid, thin_plate_spline,
                            tps_control_points, tps_grid)
from stn.warps import (crop_and_resize, denormalize_matrix, invert_affine, matrix_to_theta,
                       normalize_matrix, pixel_to_normalized, rotation_matrix, shear_matrix,
                       theta_to_matrix, translation_matrix, warp_affine, warp_perspective,
                       warp_tps)

__all__ = [
    # stn.sampling
    "sample", "axis_kernels", "default_max_scale", "unnormalize",
    # stn.transforms
    "Transform", "affine_grid", "attention_to_affine", "base_grid", "compose_affine",
    "compose_displacements", "displacement_grid", "integrate_velocity", "projective_grid",
    "thin_plate_spline", "tps_control_points", "tps_grid",
    # stn.kernels
    "Kernel", "Nearest", "Linear", "Keys", "Gaussian", "Stretched",
    # stn.boxes
    "attention_box", "box_attention", "covered_fraction", "intersection_area", "iou",
    "pixel_box",
    # stn.layers
    "ConvLocNet", "ConvLocNet3D", "FlowNet", "FlowTransformer", "Frozen",
    "FullyConnectedLocNet", "LocalisationNet", "ParallelTransformers", "RegressionLayer",
    "ReluStack", "SamplingKernel", "SerialTransformers", "SpatialTransformer", "freeze",
    "localisation_paths", "regression_layer", "regression_paths",
    # stn.warps
    "pixel_to_normalized", "normalize_matrix", "denormalize_matrix", "matrix_to_theta",
    "theta_to_matrix", "invert_affine", "rotation_matrix", "shear_matrix", "translation_matrix",
    "warp_affine", "warp_perspective", "crop_and_resize", "warp_tps",
]
