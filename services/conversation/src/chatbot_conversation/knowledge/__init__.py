"""Knowledge bases: documents ingested into passages (text and vectors), hybrid search, grounded answers."""

from .service import KnowledgeService, Upload
from .vectors import vector_index

__all__ = ["KnowledgeService", "Upload", "vector_index"]
