//! Message search, a page at a time or through a paginator.

use chorus_protocol::v1::client_envelope::Request;

use super::Client;
use crate::error::Error;
use crate::types::{SearchPage, SearchQuery};

impl Client {
    /// One page of results for `query`, from `cursor` (`None`: the first page).
    pub async fn search(
        &self,
        query: &SearchQuery,
        cursor: Option<&str>,
    ) -> Result<SearchPage, Error> {
        let r = self.plain(Request::Search(query.to_proto(cursor))).await?;
        SearchPage::try_from(expect_reply!(r, SearchResults, "Search")?)
    }

    /// The pages of `query`, one [`SearchPages::next_page`] at a time.
    pub fn search_pages(&self, query: SearchQuery) -> SearchPages<'_> {
        SearchPages {
            client: self,
            query,
            cursor: None,
            done: false,
        }
    }
}

/// The pages of one search, in order; each asks the server when it is wanted.
pub struct SearchPages<'a> {
    client: &'a Client,
    query: SearchQuery,
    cursor: Option<String>,
    done: bool,
}

impl SearchPages<'_> {
    /// The next page; `None` after the last.
    pub async fn next_page(&mut self) -> Result<Option<SearchPage>, Error> {
        if self.done {
            return Ok(None);
        }
        let page = self
            .client
            .search(&self.query, self.cursor.as_deref())
            .await?;
        self.cursor.clone_from(&page.next_cursor);
        self.done = page.next_cursor.is_none();
        Ok(Some(page))
    }
}
