"""Configuration of the relocalizer: one frozen dataclass, built once from CLI flags or ROS parameters."""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from kd3d_core.config_utils import coerce_enum_fields
from kd3d_core.errors import ConfigError


class PnpSolver(str, Enum):
    """Minimal solver run inside RANSAC on each sample (OpenCV's SOLVEPNP_* flags)."""

    P3P = "p3p"
    AP3P = "ap3p"
    SQPNP = "sqpnp"
    EPNP = "epnp"
    ITERATIVE = "iterative"


class RansacMethod(str, Enum):
    """Robust estimator: OpenCV's classic RANSAC loop or one of its USAC variants."""

    RANSAC = "ransac"
    USAC_DEFAULT = "usac_default"
    USAC_FAST = "usac_fast"
    USAC_ACCURATE = "usac_accurate"
    USAC_MAGSAC = "usac_magsac"
    USAC_PROSAC = "usac_prosac"
    USAC_PARALLEL = "usac_parallel"
    # USAC's uniform sampling and MSAC score with a short local optimisation (ransac_lo_iterations inner rounds on
    # ransac_lo_sample inliers; 0 rounds: none) and no final polishing: the relocalizer refines on the inliers
    # itself (refine, refine_core_rounds). See RelocalizerConfig for the measurement.
    USAC_LIGHT = "usac_light"


class RefineMethod(str, Enum):
    """Non-linear refinement of the RANSAC pose on its inliers."""

    NONE = "none"
    LM = "lm"
    VVS = "vvs"


@dataclass(frozen=True)
class RelocalizerConfig:
    """Everything that changes how one frame is localized.

    Defaults were picked by measurement on dense stride-8 correspondences at 640x480 (36 cameras, 0.5-4 cm
    point noise, 30-70 % gross outliers, 2048 correspondences, 2 shared CPU cores): USAC_DEFAULT + LM refinement
    + one inlier re-selection round reached 89 % within 2 cm / 2 deg and 97 % within 5 cm / 5 deg at a 12 px
    threshold (97 % / 100 % at 16 px) in about a third of the time of USAC_ACCURATE, while classic RANSAC with
    any minimal solver (P3P, AP3P, SQPnP, EPnP) was both slower (3-8x) and less accurate (58-75 % within
    2 cm / 2 deg). 12 px rather than 16 keeps the threshold sane at lower input resolutions. USAC_FAST was tried
    as the default: on the fast student's predictions of 640x480 queries it matched USAC_DEFAULT in 0.72-0.79x the
    PnP time (office 240 frames, low-texture room 180), but in the robustness bench's 320x240 queries (two runs
    that differed only in the estimator) it lost frames (living noise 97 -> 90 %, low-texture clean 97 -> 93 %
    and gain x0.5 20 -> 10 % within 5 cm / 5 deg; bench/results-2026-11-30-cpu2-robustness-eps.md against
    -robustness-v2.md) for ~4 ms of a ~130 ms frame, so USAC_DEFAULT stayed.

    USAC_LIGHT (one inner local-optimisation round on 10 inliers, no final polishing) was measured as the default:
    USAC_DEFAULT's local optimisation takes ~80 % of its time, and our own refinement follows RANSAC anyway. Side
    by side (bench/side_by_side.py --compare ransac:usac_default,usac_light; office 640x480 and low-texture 320x240
    queries, one thread) PnP-RANSAC took 3.3-3.7 against 9.8-10.0 ms and 4.9 against 11.5 ms, localize 0.87x. But
    on four fast models (no block and one block, encoder seeds 0 and 1; the robustness bench's three rooms, 14
    variants x 30 frames each, 5040 frames in all) it localized 4403 frames within 5 cm / 5 deg against 4423,
    4124 within 2 cm / 2 deg against 4152, and gave 7 wrong poses against 2 (the extra ones plain poses 11-35 cm
    off with inlier ratios 0.10-0.12: without the local optimisation a wrong hypothesis scrapes past the ratio
    bar). A wrong pose costs more than 6 ms, so USAC_DEFAULT stayed then.

    USAC_LIGHT with five inner rounds on 14 inliers (OpenCV's own UsacParams defaults for the local optimisation)
    is the default since weak poses must be confirmed (confirm_below_ratio). Side by side (office, 20 query frames
    at 640x480, 3 rounds alternating, one thread, quiet machine): localize 41.5 -> 37.6 ms (0.91x), PnP-RANSAC +
    refinement 13.4 -> 9.6 ms (one round on 10 inliers: 0.84x). Before the confirmation, the robustness bench with
    it (bench/results-2026-11-30-cpu2-robustness-v12.md against -v11.md) had 2 wrong poses against 1: in the living
    room's lower-camera row a frame 34.5 cm / 10 deg off at an inlier ratio of exactly 0.100 (the weaker local
    optimisation finds worse hypotheses where the matches are weakest, as the single round did). With the
    confirmation (-robustness-v14.md against -v13.md, both confirming): no wrong pose either way; within 5 cm /
    5 deg . 2 cm / 2 deg office 99.8 . 95.7 -> 99.8 . 95.5 %, living 99.8 . 96.4 -> 99.5 . 96.2 % (one lower-camera
    frame lost), low texture 65.2 . 59.5 % both; 43.0 ms (23.3 Hz) at 640x480 and 46.3 ms (21.6 Hz) with a core
    kept busy, against 45.8 and 52.3 ms in the v13 run.

    Attributes:
        min_confidence: cells whose predicted confidence is not above this are dropped.
        max_correspondences: keep at most this many cells, the most confident first (0 = keep all).
        solver: minimal solver of classic RANSAC (the USAC methods choose their own).
        ransac: robust estimator.
        reprojection_threshold_px: inlier threshold in pixels of the input image.
        ransac_iterations: maximum RANSAC iterations.
        ransac_confidence: RANSAC stopping confidence.
        ransac_lo_iterations, ransac_lo_sample: USAC_LIGHT's inner local-optimisation rounds (0: none) and the
            inliers each round fits.
        refine: refinement on the inliers.
        refine_rounds: re-select inliers with the refined pose and refine again, at most this many extra times
            (it stops as soon as the inliers stay the same). A fixed single extra round (the default until
            2026-12-01, with at most 3 core rounds) left poses 10-11 cm off whose RANSAC hypothesis was 40-60 cm
            off: the pose was still moving when the rounds ran out, and the core rounds then locked onto a biased
            core; refined until the inliers stopped changing, the same frames ended 0.7 and 1.4 cm off (office
            JPEG q25, living dimmed lights). Bench rooms (14 variants x 30 frames, the LCN floor 0.015 models of
            -robustness-v16.md), at most 1 / 3 rounds against at most 10 / 10, both stopping early: within 5 cm / 5
            deg . 2 cm / 2 deg office 99.8 . 94.5 -> 100 . 94.8 %, living 99.3 . 96.4 -> 99.5 . 96.9 %, low
            texture 70.0 . 65.5 -> 70.0 . 66.0 %; wrong poses 3 -> 1. On the v17 models (floor 0.025) wrong 1 -> 0;
            encoder seed 1: 1134 / 1086 -> 1135 / 1091 of 1260 frames within 5 cm / 2 cm, no wrong pose either way.
        refine_core_fraction / refine_core_rounds / refine_core_min_cells: then refine at most refine_core_rounds
            more times (until the core stays the same) on the core of the inliers, those within
            max(refine_core_fraction x reprojection_threshold_px, refine_core_min_cells x the image pixels per
            output cell) of the pose (at least 12 points, else the pose stays); the inliers returned and judged are
            still those within the full threshold. A fraction of 0 turns it off. The floor keeps the core from going
            below the predictions' own cell quantisation (a query cell's centre and its matched mapping cell's point
            are up to half a cell apart): 3 px is 0.375 of a cell at 320x240 but 0.19 of one at 640x480 (16-pixel
            cells for a 320x240 network input). The threshold has to admit near-miss matches (a neighbouring cell's
            point a few pixels off) for RANSAC to find the pose under photometric change, but least squares over all
            of them is pulled by those near misses. Measured with the fast student (bench rooms, 8 query variants x
            30 frames at 320x240, 12 px threshold; off -> 0.25): within 2 cm / 2 deg office 75.0 -> 91.2 %, living
            75.0 -> 89.6 %, low texture 26.3 -> 43.3 %; within 5 cm / 5 deg 97.5 -> 98.8 %, 94.6 -> 97.5 %, 52.9 ->
            57.9 %; median position error 1.20 -> 0.80, 1.23 -> 0.78, 2.25 -> 1.25 cm; no more wrong poses. A core
            fraction relative to the inliers' median error instead (2-2.5x) gained less and let one wrong pose
            through. The half-cell floor (and the core on the guided chance's judged solve, which the floor made
            safe), same bench rooms and all 14 variants: within 2 cm / 2 deg office 92.1 -> 93.3 % (rolled 80 -> 97
            %), living 91.4 -> 93.6 %, low texture 48.8 -> 47.4 %; 5 cm / 5 deg equal or +0.5; wrong poses 1 -> 0.
            At 640x480 queries (the demo's room, 100 frames; clean, gain x1.6, JPEG, noise): 2 cm / 2 deg 99 / 89 /
            98 / 98 % -> 100 / 90 / 99 / 100 %.
        min_inliers: fewer inliers than this is a failure.
        min_inlier_ratio: a smaller inlier fraction of the correspondences is a failure (so the inliers needed
            grow with the number of correspondences). Measured with the fast student (1200 correspondences):
            real query frames 0.35-0.91 in textured rooms, 0.05-0.9 in the low-texture room; hostile frames
            that reach PnP (noise, white, 6x over- or 16x under-exposed, faint ramps) 0.02-0.058, and at 0.05 a
            low-texture frame with ratio 0.054 was a 0.83 m / 31 deg "success" (NEES 106), so 0.1 (costs 4 of
            30 low-texture frames that were within 5 cm / 5 deg).
        min_inlier_coverage: the inliers must fall in at least this fraction of an 8x6 grid over the image.
        min_inlier_confidence: the inliers' median predicted confidence must reach this.
        max_position_std_m: a pose whose 1-sigma position uncertainty (largest axis, after inflation) is larger
            is not a fix.
        covariance_inflation: factor on the covariance; dense predictions are correlated, so the textbook
            sigma^2 (J^T J)^-1 is optimistic. Measured with `kd3d bench --only covariance`'s method on 317-320
            query frames of six synthetic rooms (tiny, bedroom, kitchen, office, living, lab; 100 mapping
            frames; 320x240 queries, office and kitchen also at 640x480): with the fast student of commit
            2948ea6 (local contrast normalised input) the textbook covariance gave mean NEES 9.9 (position) and
            9.7 (rotation) where an honest 3-DoF covariance gives 3, 58 % of frames inside the chi^2(3) 95 %
            ellipsoid; 4 puts 96.5 % / 96.8 % inside (mean NEES 2.5 / 2.4; bootstrap 90 % interval of the
            needed factor 3.2-4.5). The earlier fast student (commit 70b70ae, unnormalised input) needed 18
            (textbook: mean NEES 42 / 34, 20 % inside). The factor depends on the model and the refinement:
            after the core refinement (refine_core_fraction) poses became more accurate while the covariance,
            computed from all the inliers' residuals, did not shrink: with 4, 99.4 % / 98.6 % of 350 query frames
            of seven rooms (the six above and lowtex, 100 mapping / 50 query frames each) fell inside the 95 %
            ellipsoid (mean NEES 1.3 / 1.7); the factor for 95 % was 2.6 over all rooms (1.4-3.5 per room), so
            3. With the core's half-cell floor (refine_core_min_cells), same rooms and frames: 98.3 % / 96.0 %
            inside at 3 (90-100 % per room), factor for 95 % again 2.6. Rerun the bench section after changing
            the student or the solver (kd3d_core.localization.calibration).
        min_image_side_px: smaller images are refused.
        max_aspect_mismatch: refuse images whose aspect ratio differs from the model's input by more than this
            factor (the network would see them stretched); 0 disables.
        max_principal_offset: the principal point must lie within this fraction of the image size from the
            image centre (0.5 = anywhere in the image).
        min_fov_deg / max_fov_deg: plausible field of view from K and the image size.
        min_mean_intensity / max_dark_fraction / max_bright_fraction: exposure limits (grey levels 0-255;
            fractions of pixels <= 10 and >= 245).
        min_intensity_std / min_textured_fraction / texture_gradient: a frame needs this much contrast and this
            fraction of pixels with a neighbour difference >= texture_gradient grey levels.
        roll_retry_deg: a frame lost upright (no pose, or one that failed the inlier checks) is tried again on
            the image turned back by each of these angles about the optical axis, in order, until one localizes
            (kd3d_core.localization.roll). Each retry costs one more network pass, on lost frames only; () turns
            it off; one number d means (d, -d) and 0 means (). The fast student's memory holds upright mapping
            views: on the office room's query walk rolled +-20 deg (60 frames at 640x480) it localized 47 % within
            5 cm / 5 deg upright and 98 % with the retry, no wrong pose; in the robustness bench (320x240) the
            rolled rows went 60 -> 93 % (office) and 50 -> 93 % (living).
        zoom_retry: a frame still lost after the roll retries is tried again on the image zoomed out by each of
            these factors about the principal point (the view of the same camera with focal lengths times the
            factor; roll.zoomed_view), in order, until one localizes; factors above 1 zoom in. One more network
            pass, on lost frames only; () or 0 turns it off; one number z means (z,). Each cell of the zoomed-out
            view covers more of the scene: a close-up's texture is back at the scale the memory holds, a faint
            texture is averaged over more pixels. Measured on the bench rooms (14 variants x 30 frames, 320x240,
            the v18 models), frames within 5 cm / 5 deg . 2 cm / 2 deg of 1260: off 1113 . 1064; 0.5 1115 . 1065;
            0.6 1128 . 1068; 0.7 1127 . 1074; 0.8 1123 . 1071; 0.7 then 0.5 1128 . 1074; no wrong pose with any.
            With 0.7 the low-texture room's dimmed lights 23 -> 47 %, gamma 0.6 80 -> 90 %, gain x0.5 17 -> 20 %,
            white balance and lower camera 90 -> 93 %, and the office's lower camera 96.7 -> 100 %; no row lost a
            frame. Encoder seed 1's models: 1135 . 1091 -> 1144 . 1098, no wrong pose, no row worse. A look zoomed
            in (1.43) found no frame more. Side by side: frames that localize 0.99x (demo queries), frames that
            stay lost 1.23x (351 -> 430 ms).
        roll_upright_deg: a frame that localizes with the camera rolled by at least this many degrees from the
            mapping cameras' up (ModelMeta.mapping_up; models without it skip this) is looked at once more, turned
            upright by exactly its roll, and the pose with more inliers is kept: a rolled view matches the memory
            of upright mapping views less well, so its pose is less precise. One more network pass on rolled
            frames only (side by side: 0.98x the time of an upright frame, 1.94x that of a rolled one); 0 turns it
            off. The bench rooms' mapping walks roll 3 deg at most. Measured on the robustness bench's rooms (query
            walk rolled +-20 deg, 30 frames, 320x240; bench/results-2026-11-30-cpu2-robustness-v10.md against
            -v9.md), within 2 cm / 2 deg: office 86.7 -> 93.3 %, living 76.7 -> 90.0 %, low-texture 83.3 -> 86.7 %
            (within 5 cm / 5 deg 100 % either way); on the rooms' encoder-seed-1 models, office 96.7 -> 96.7 %
            (median 0.94 -> 0.57 cm), living 96.7 -> 100 %. No other row changed. A stream (the ROS node, a bag
            replay) passes each frame the previous fix's roll (roll.RollTracker); a camera that stays rolled is then
            looked at upright first and costs one pass a frame: query frames turned 15 deg as one stream, 2.03 ->
            1.03 passes a frame, 121 -> 53-59 ms (office) and 107 -> 50-51 ms (living), within 2 cm / 2 deg 100 -> 100 %
            and 96.7 -> 93.3 %.

        guided_candidates: a frame whose upright pose hypothesis failed the inlier checks gets a guided second
            chance (kd3d_core.localization.guided): per cell the fast student's memory returns this many most
            similar stored cells, the one that reprojects closest under the hypothesis is kept, PnP-RANSAC runs
            again on those, and the pose is re-guided up to guided_rounds times while it moves. Needs a model
            with a feature memory (the fast student's kNN head); 0 turns it off. Robustness bench (14 query
            variants x 30 frames per room, bench/results-2026-11-30-cpu2-robustness-v3.md): living room 94.0 ->
            96.9 % within 5 cm / 5 deg (JPEG q25 63 -> 87 %, gain x1.6 77 -> 87 %), low-texture room 56.7 -> 58.6 %,
            office unchanged, wrong fixes 3 -> 2; on rooms of another seed, not used to choose the bars, living
            95.9 -> 98.5 % and low-texture 54.1 -> 55.6 % (9 photometric variants), no wrong pose either way.
        guided_min_inlier_ratio: the least inlier ratio (inliers / cells with candidates) a guided pose needs; the
            bar rises to 2.5x what chance alone would give (guided_ratio_bar) on small images. The other inlier
            checks are the usual ones. Measured (bench rooms, every guided pose accepted): right poses 0.14-0.31;
            far-off wrong ones <= 0.13; in the low-texture room poses 10-50 cm off reached 0.26, which only the
            RMS bar (guided_max_rmse) catches.
        guided_rounds: at most this many guided PnP rounds (stops earlier once the camera moves < 5 mm).
        guided_max_rmse: a guided pose's inliers must reproject with an RMS error of at most this fraction of
            reprojection_threshold_px. Inliers that merely fill the tolerance disk by chance have an RMS of about
            0.7 of the radius (uniform in the disk); real ones concentrate near zero. Measured on the bench rooms
            (12 px radius at 320x240): right guided poses 3.1-5.9 px; wrong ones 6.3-8.1 px where far off,
            4.6-6.7 px where 10-50 cm off (low-texture room). With 0.375 (4.5 px) no guided pose was more than
            10 cm off in those rooms; without it the low-texture room got 11.
        guided_min_inlier_coverage: the least inlier coverage (min_inlier_coverage's 8x6 grid) a guided pose
            needs: a right pose is supported across the image, while a wrong hypothesis that the rounds fit to
            whichever candidates agree with it gathers them in part of it. Measured on the rolled views of four
            160x120 test rooms (seeds 3-6, 6 px radius, both the four-block and the one-block encoder): 7 guided
            poses 17-46 cm off had coverage 0.33-0.46, the 37 right ones 0.38-0.79 (4 below 0.5); on the three
            bench rooms (320x240, 14 variants, one-block encoder) every guided pose was right, coverage 0.44-1.0
            (one below 0.5, 4.9 cm off).
        guided_distinct_fraction: when the guided search from the failed hypothesis does not localize, it starts
            once more from PnP-RANSAC on this fraction of the cells, the most distinctive (guided.distinctive_cells:
            best similarity minus that of the best candidate more than guided_distinct_radius_m away); 0 turns it
            off. In frames that come back lost, the failed hypothesis is mostly meters off: the true pose had
            5-8 % of the cells as top-1 inliers (60-100 of 1200) against 19-26 for the hypothesis, too few for
            1000 RANSAC iterations to find; in over-exposed frames the 200 most similar cells held 0-3 of them
            (clipped and flat cells match everything almost perfectly). Among the 100 most distinctive cells
            19-35 % were inliers. Robustness bench (bench/results-2026-11-30-cpu2-robustness-v11.md against -v10.md, 14
            variants x 30 frames per room), within 5 cm / 5 deg . 2 cm / 2 deg: office 99.5 . 95.5 -> 99.8 . 95.7 %
            (gain x1.6 96.7 -> 100 %), living 98.6 . 95.0 -> 99.5 . 96.0 % (gain x1.6 93.3 -> 100 %, JPEG q25 90 ->
            96.7 %), low-texture 63.3 . 58.3 -> 66.0 . 60.0 % (gamma 0.6 63 -> 87 %), no new wrong pose; no row
            lost a frame. The 100 or 200 most distinctive cells gave the same office and living rows. On the
            160x120 test room (300 cells), 30 or 60 cells added right guided poses only, 100 also three 10-15 cm
            off: hence a fraction of the cells.
            Cost, side by side: a frame the search rescues skips the roll retries (living JPEG lost frames 262 ->
            202 ms); one that stays lost pays ~60 ms more (low-texture noise row 288 -> 348 ms); others nothing.
        guided_distinct_radius_m: candidates nearer than this to a cell's best one (the same surface seen from
            another mapping view) are not its rivals (map units; metres in metric maps).
        confirm_below_ratio: a pose with an inlier ratio below this (of the correspondences) stands only if the
            guided search started from it (the guided bars, guided_candidates per cell) localizes within
            confirm_agree_m of it; otherwise the frame fails with unconfirmed_pose and the guided chance's
            distinctive start runs. 0 turns it off; it needs a memory (the fast student) and guided_candidates >
            0, and it costs a candidate search and a few PnP runs on such frames only. The wrong poses we have seen
            pass the checks had inlier ratios of 0.10-0.12 (above, USAC_LIGHT; the living room's lower camera: a
            pose 11 cm / 3 deg off at 0.102 whose reported 1 sigma was 1.4 cm), while right poses at 0.10-0.12 are
            3 % of the bench's first-pass fixes (32 of 1113). The guided search from a right pose gathers its
            other candidates and stays; from a biased one it moves or fails. Robustness bench
            (bench/results-2026-11-30-cpu2-robustness-v13.md against -v11.md, 1260 frames): wrong fixes 1 -> 0
            (the living lower-camera row 96.7 -> 100 % within 5 cm / 5 deg: the refused frame then localized
            right), living 99.5 . 96.0 -> 99.8 . 96.4 % within 5 cm / 5 deg . 2 cm / 2 deg, office unchanged,
            low texture 66.0 . 60.0 -> 65.2 . 59.5 % (three frames refused). On the encoder-seed-1 models (a
            harness, the same rule) office and living were unchanged and low texture lost two frames of 420.
        confirm_above_rmse: a pose whose inliers reproject with an RMS error above this fraction of the inlier
            threshold must be confirmed the same way, whatever its inlier ratio (the bar guided poses must meet,
            guided_max_rmse; 1 turns it off: inliers never reproject beyond the threshold). A wrong pose gathers
            "inliers" spread over the whole threshold band, a right one tight ones. Found on encoder-seed-4 models
            of the bench rooms (kd3d_core/assets/README.md): a living-room frame at gamma 0.6 was reported 61.5 cm /
            16 deg off with 216 inliers (ratio 0.18, past the ratio check), an RMS of 4.61 px against a 4.5 px
            bar, and a reported 1 sigma under 1 cm. Right plain poses above the bar were 4 of 1015 (v17's models) and
            9 of 1061 (seed 4). With the check, every one of those 13 right poses was confirmed and kept unchanged,
            and the wrong one was refused, after which the guided chance's distinctive start localized the frame
            2.5 cm off; about 1 % of frames pay the guided search (~20-60 ms). The robustness bench with it
            (bench/results-2026-12-01-cpu2-robustness-v18.md against -v17.md, bit-identical models): the same
            frame counts in every row; one frame of the living room's rolled row ended 0.93 instead of 0.40 cm off.
            The same 1260 frames on two more model sets, with and without it: encoder seed 1 identical (1135 / 1091
            within 5 cm / 5 deg . 2 cm / 2 deg, no wrong pose), seed 2 one frame fewer (1127 / 1070 against
            1128 / 1071; its one wrong pose is a guided one, which this check does not see).
        confirm_agree_m: how far the confirming guided search may move the pose (map units; metres in metric
            maps).

    The image gates refuse only frames with nothing to localize on; everything else goes to the network and is
    judged by its inliers. Measured on 360 real query frames of seven synthetic rooms (320x240) and the
    robustness family's photometric variants (gain 0.5 / 1.6, gamma 0.6 / 1.6, white balance, noise, motion
    blur, JPEG 25): mean grey level >= 28.6, grey-level std >= 6.2, at most 80 % saturated pixels (gain 1.6;
    92 % in the bright low-texture room) and 32 % black ones (gamma 1.6). Blank, white, uniform and 16x
    under-exposed frames are far outside (std 0, 100 % saturated or black, mean ~10). The texture-fraction gate
    is off by default: the low-texture room has no pixel differences >= 2 grey levels in most frames, and
    refusing them before the network halved its recall (12 -> 6 of 30 within 5 cm / 5 deg); such frames, and
    faint ramps, are left to the inlier checks.
    """

    min_confidence: float = 0.0
    max_correspondences: int = 2048
    solver: PnpSolver = PnpSolver.SQPNP
    ransac: RansacMethod = RansacMethod.USAC_LIGHT
    reprojection_threshold_px: float = 12.0
    ransac_iterations: int = 1000
    ransac_confidence: float = 0.9999
    ransac_lo_iterations: int = 5
    ransac_lo_sample: int = 14
    refine: RefineMethod = RefineMethod.LM
    refine_rounds: int = 10
    refine_core_fraction: float = 0.25
    refine_core_rounds: int = 10
    refine_core_min_cells: float = 0.5
    min_inliers: int = 30
    min_inlier_ratio: float = 0.1
    min_inlier_coverage: float = 0.25
    min_inlier_confidence: float = 0.5
    max_position_std_m: float = 1.0
    covariance_inflation: float = 3.0
    min_image_side_px: int = 32
    max_aspect_mismatch: float = 1.5
    max_principal_offset: float = 0.25
    min_fov_deg: float = 10.0
    max_fov_deg: float = 170.0
    min_mean_intensity: float = 15.0
    max_dark_fraction: float = 0.95
    max_bright_fraction: float = 0.95
    min_intensity_std: float = 2.0
    min_textured_fraction: float = 0.0
    texture_gradient: float = 8.0
    roll_retry_deg: tuple[float, ...] | float = (20.0, -20.0)
    zoom_retry: tuple[float, ...] | float = (0.7,)
    roll_upright_deg: float = 8.0
    guided_candidates: int = 8
    guided_min_inlier_ratio: float = 0.12
    guided_rounds: int = 3
    guided_max_rmse: float = 0.375
    guided_min_inlier_coverage: float = 0.5
    guided_distinct_fraction: float = 0.15
    guided_distinct_radius_m: float = 0.1
    confirm_below_ratio: float = 0.12
    confirm_above_rmse: float = 0.375
    confirm_agree_m: float = 0.05

    def __post_init__(self) -> None:
        coerce_enum_fields(self, {"solver": PnpSolver, "ransac": RansacMethod, "refine": RefineMethod}, "relocalizer")
        try:
            angles = self.roll_retry_deg
            if isinstance(angles, (int, float)) and not isinstance(angles, bool):
                angles = (float(angles), -float(angles)) if angles else ()  # one number d: +d and -d; 0: off
            object.__setattr__(self, "roll_retry_deg", tuple(float(a) for a in angles))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"relocalizer config: roll_retry_deg must be a list of angles in degrees, got "
                              f"{self.roll_retry_deg!r}") from err
        try:
            zooms = self.zoom_retry
            if isinstance(zooms, (int, float)) and not isinstance(zooms, bool):
                zooms = (float(zooms),) if zooms else ()  # one number z: (z,); 0: off
            object.__setattr__(self, "zoom_retry", tuple(float(z) for z in zooms))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"relocalizer config: zoom_retry must be a list of zoom factors, got "
                              f"{self.zoom_retry!r}") from err
        checks = [
            (self.max_correspondences >= 0, "max_correspondences must be >= 0"),
            (self.reprojection_threshold_px > 0, "reprojection_threshold_px must be > 0"),
            (self.ransac_iterations > 0, "ransac_iterations must be > 0"),
            (0 < self.ransac_confidence < 1, "ransac_confidence must be in (0, 1)"),
            (self.ransac_lo_iterations >= 0, "ransac_lo_iterations must be >= 0"),
            (self.ransac_lo_sample >= 4, "ransac_lo_sample must be >= 4"),
            (self.refine_rounds >= 0, "refine_rounds must be >= 0"),
            (0.0 <= self.refine_core_fraction <= 1.0, "refine_core_fraction must be in [0, 1]"),
            (self.refine_core_rounds >= 0, "refine_core_rounds must be >= 0"),
            (0.0 <= self.refine_core_min_cells <= 4.0, "refine_core_min_cells must be in [0, 4]"),
            (self.min_inliers >= 4, "min_inliers must be >= 4 (PnP needs at least 4 points)"),
            (0 <= self.min_inlier_ratio <= 1, "min_inlier_ratio must be in [0, 1]"),
            (math.isfinite(self.covariance_inflation) and self.covariance_inflation > 0,
             "covariance_inflation must be a finite number > 0"),
            (self.min_image_side_px >= 8, "min_image_side_px must be >= 8"),
            (self.max_aspect_mismatch == 0 or self.max_aspect_mismatch >= 1, "max_aspect_mismatch must be 0 or >= 1"),
            (0 < self.max_principal_offset <= 0.5, "max_principal_offset must be in (0, 0.5]"),
            (0 < self.min_fov_deg < self.max_fov_deg < 180, "need 0 < min_fov_deg < max_fov_deg < 180"),
            (self.max_position_std_m > 0, "max_position_std_m must be > 0"),
            (self.texture_gradient > 0, "texture_gradient must be > 0"),
            (all(math.isfinite(a) and 0 < abs(a) < 180 for a in self.roll_retry_deg),
             "roll_retry_deg must be finite angles with 0 < |angle| < 180"),
            (all(math.isfinite(z) and 0.25 <= z <= 4 and z != 1 for z in self.zoom_retry),
             "zoom_retry must be zoom factors in [0.25, 4], other than 1"),
            (0 <= self.roll_upright_deg < 180, "roll_upright_deg must be in [0, 180) (0 = off)"),
            (0 <= self.guided_candidates <= 64, "guided_candidates must be in [0, 64] (0 = off)"),
            (0 <= self.guided_min_inlier_ratio <= 1, "guided_min_inlier_ratio must be in [0, 1]"),
            (self.guided_rounds >= 1, "guided_rounds must be >= 1"),
            (0 < self.guided_max_rmse <= 1, "guided_max_rmse must be in (0, 1] (a fraction of the inlier threshold)"),
            (math.isfinite(self.guided_distinct_radius_m) and self.guided_distinct_radius_m >= 0,
             "guided_distinct_radius_m must be a finite distance >= 0"),
            (math.isfinite(self.confirm_agree_m) and self.confirm_agree_m > 0,
             "confirm_agree_m must be a finite distance > 0"),
        ]
        fractions = ("min_inlier_coverage", "guided_min_inlier_coverage", "guided_distinct_fraction",
                     "confirm_below_ratio", "confirm_above_rmse", "min_inlier_confidence", "max_dark_fraction",
                     "max_bright_fraction", "min_textured_fraction")
        checks += [(0 <= getattr(self, name) <= 1, f"{name} must be in [0, 1]") for name in fractions]
        checks += [(0 <= getattr(self, name) <= 255, f"{name} must be in [0, 255] grey levels")
                   for name in ("min_mean_intensity", "min_intensity_std")]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"relocalizer config: {message}")
