package kr.vh.elasticsearch.nori;

import org.apache.lucene.analysis.TokenStream;
import org.apache.lucene.analysis.ko.KoreanPartOfSpeechStopFilter;
import org.apache.lucene.analysis.ko.POS;
import org.elasticsearch.plugin.Inject;
import org.elasticsearch.plugin.NamedComponent;
import org.elasticsearch.plugin.analysis.TokenFilterFactory;
import org.elasticsearch.plugin.settings.AnalysisSettings;
import org.elasticsearch.plugin.settings.ListSetting;

import java.util.List;
import java.util.Set;

/** {@code nori_part_of_speech}: drops tokens by part of speech (particles J, endings E, ...). */
@NamedComponent("nori_part_of_speech")
public class NoriPartOfSpeechFilterFactory implements TokenFilterFactory {

    @AnalysisSettings
    public interface Settings {
        @ListSetting(path = "stoptags")
        List<String> stopTags();
    }

    private final Set<POS.Tag> stopTags;

    @Inject
    public NoriPartOfSpeechFilterFactory(Settings settings) {
        this.stopTags = NoriSupport.stopTags(settings.stopTags());
    }

    @Override
    public TokenStream create(TokenStream tokenStream) {
        return new KoreanPartOfSpeechStopFilter(tokenStream, stopTags);
    }
}
