package kr.vh.elasticsearch.nori;

import org.apache.lucene.analysis.Analyzer;
import org.apache.lucene.analysis.ko.KoreanAnalyzer;
import org.apache.lucene.analysis.ko.KoreanTokenizer;
import org.apache.lucene.analysis.ko.POS;
import org.apache.lucene.analysis.ko.dict.UserDictionary;
import org.elasticsearch.plugin.Inject;
import org.elasticsearch.plugin.NamedComponent;
import org.elasticsearch.plugin.analysis.AnalyzerFactory;
import org.elasticsearch.plugin.settings.AnalysisSettings;
import org.elasticsearch.plugin.settings.ListSetting;
import org.elasticsearch.plugin.settings.StringSetting;

import java.util.List;
import java.util.Set;

/**
 * {@code nori}: Lucene's KoreanAnalyzer, exactly what the official plugin's analyzer
 * builds: nori_tokenizer + nori_part_of_speech + nori_readingform + lowercase.
 */
@NamedComponent("nori")
public class NoriAnalyzerFactory implements AnalyzerFactory {

    @AnalysisSettings
    public interface Settings {
        @StringSetting(path = "decompound_mode", defaultValue = "discard")
        String decompoundMode();

        @ListSetting(path = "stoptags")
        List<String> stopTags();

        @ListSetting(path = "user_dictionary_rules")
        List<String> userDictionaryRules();

        @StringSetting(path = "user_dictionary", defaultValue = "")
        String userDictionary();
    }

    private final KoreanTokenizer.DecompoundMode mode;
    private final Set<POS.Tag> stopTags;
    private final UserDictionary userDictionary;

    @Inject
    public NoriAnalyzerFactory(Settings settings) {
        this.mode = NoriSupport.decompoundMode(settings.decompoundMode());
        this.stopTags = NoriSupport.stopTags(settings.stopTags());
        this.userDictionary = NoriSupport.userDictionary(settings.userDictionary(), settings.userDictionaryRules());
    }

    @Override
    public Analyzer create() {
        return new KoreanAnalyzer(userDictionary, mode, stopTags, false);
    }
}
