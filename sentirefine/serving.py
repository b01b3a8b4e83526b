"""The old import path of :mod:`sentirefine.integrations.serving`, kept for registered models.

MLflow pickles a pyfunc's class by its module path: model versions registered before the
package took its pipeline-shaped layout name ``sentirefine.serving.EnsemblePyfunc``, and a
serving system loading such a version must still find it here.
"""

from sentirefine.integrations.serving import EnsemblePyfunc, MemberPyfunc

__all__ = ["EnsemblePyfunc", "MemberPyfunc"]
