"""Your photo library, searchable by your concepts.

``rap photos index`` looks at each photo once, as retrieval would (regions,
their vectors, faces) and keeps that beside the concept store; ``find`` then
asks "which photos show <bo>?" against the concept's keys as they are now, so a
concept's edit changes the answer with no re-indexing; ``suggest`` groups
subjects that recur in the photos and match none of the concepts.

Only the embedded store has a photo library today (``photos.sqlite`` in its
folder); a PostgreSQL variant would implement :class:`PhotoLibrary`'s methods on
its own tables and is not built yet.
"""

from rap.photos.find import FoundPhoto, find_photos
from rap.photos.indexer import IndexSummary, index_photos
from rap.photos.library import PhotoLibrary, open_library
from rap.photos.suggest import Group, name_group, suggest_groups

__all__ = [
    "FoundPhoto",
    "Group",
    "IndexSummary",
    "PhotoLibrary",
    "find_photos",
    "index_photos",
    "name_group",
    "open_library",
    "suggest_groups",
]
