"""Real human motion capture (CMU ASF/AMC, BVH) and differentiable forward kinematics for pose inversion.

Units: millimetres and degrees throughout; Y is up. See ``kinematics`` for the FK convention and the
17-joint (Human3.6M-style) pose, ``dataset`` for the subject split of ../shared/data/mocap-cmu.
"""
from tasks.pose.mocap.amc import CMU_FPS, Motion, parse_amc, read_amc
from tasks.pose.mocap.asf import Bone, MocapError, Skeleton, parse_asf, read_asf
from tasks.pose.mocap.bvh import (
                  BVH_JOINTS17_CMU,
                  Bvh,
                  BvhJoint,
                  bvh_forward_kinematics,
                  bvh_joints17_indices,
                  bvh_to_joints17,
                  parse_bvh,
                  read_bvh,
)
from tasks.pose.mocap.dataset import Clip, PoseSet, load_split, mocap_root, read_index
from tasks.pose.mocap.kinematics import (
                  CMU_POINT_NAMES,
                  JOINT_NAMES_17,
                  JOINT_PARENTS_17,
                  JOINTS17_ASF,
                  axis_matrix,
                  channel_rotations,
                  euler_to_matrix,
                  fk_from_rotations,
                  forward_kinematics,
                  joint17_parents,
                  joints17,
                  joints17_indices,
                  matrix_to_rot6d,
                  rest_pose,
                  rot6d_to_matrix,
)

__all__ = [
    "CMU_FPS", "Motion", "parse_amc", "read_amc",
    "Bone", "MocapError", "Skeleton", "parse_asf", "read_asf",
    "BVH_JOINTS17_CMU", "Bvh", "BvhJoint", "bvh_forward_kinematics", "bvh_joints17_indices", "bvh_to_joints17",
    "parse_bvh", "read_bvh",
    "Clip", "PoseSet", "load_split", "mocap_root", "read_index",
    "CMU_POINT_NAMES", "JOINT_NAMES_17", "JOINT_PARENTS_17", "JOINTS17_ASF", "axis_matrix", "channel_rotations",
    "euler_to_matrix", "fk_from_rotations", "forward_kinematics", "joint17_parents", "joints17",
    "joints17_indices", "matrix_to_rot6d", "rest_pose", "rot6d_to_matrix",
]
