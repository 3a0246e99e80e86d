from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, render

from . import selectors


@login_required
def inbox(request):
    """A rep's inbox: qualified leads that are theirs or unassigned, hottest first."""
    page = Paginator(selectors.inbox_for(request.user), 50).get_page(request.GET.get("page"))
    return render(request, "leads/inbox.html", {"page": page})


@login_required
def lead_detail(request, pk):
    lead = get_object_or_404(selectors.lead_list_for(request.user), pk=pk)
    return render(request, "leads/detail.html", {"lead": lead, "events": selectors.lead_timeline(lead)})
