"""The lab's sections, one module per part of the lecture (ids in :data:`rnnlab.lab.SECTIONS`): each gives
``router(lab) -> fastapi.APIRouter`` with its endpoints under ``/api/lab/<id>/``; its page is
``rnnlab/web/lab/<id>.js``."""
